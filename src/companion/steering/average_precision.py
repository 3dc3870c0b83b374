"""The AP kernel: one-vs-rest average precision of every unit, equal to sklearn's, by one integer sort per unit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import repeat

import numpy as np
import torch


def _exact_ap(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of every column of scores for each label column (classes x units), any dtype, by a float sort per unit."""
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([_tied_ap(ranked, labels[:, c][order].T, np.bincount(labels[:, c], minlength=2))[1]
                         for c in range(labels.shape[1])])



def _sorted_keys(block: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Sorted int64 keys (units x rows): ascending keys are descending float32 scores, row class in the low byte."""
    bits = np.empty(block.shape[::-1], dtype=np.float32)
    for row in range(0, len(block), 16):  # transposed 16 rows at a time: cache-friendly, 4x faster than at once
        np.add(block[row:row + 16].T, np.float32(0), out=bits[:, row:row + 16])  # + 0: -0.0 becomes 0.0, a tie
    bits = bits.view(np.int32)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # integers in the order of the float32 scores
    np.invert(bits, out=bits)  # ... and in reverse order
    keys = np.left_shift(bits, 8, dtype=np.int64)
    keys |= classes
    keys.sort(axis=1)
    return keys



def _tied_ap(scores: np.ndarray, ranked_classes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One-vs-rest AP (classes x units) from sorted scores with ties: a tied group counts at its last rank."""
    last = np.ones(scores.shape, dtype=bool)
    last[:, :-1] = scores[:, 1:] != scores[:, :-1]
    end = np.minimum.accumulate(np.where(last, np.arange(scores.shape[1]), scores.shape[1])[:, ::-1], axis=1)[:, ::-1]
    result = []
    for c, size in enumerate(sizes):
        hit = ranked_classes == c
        precision = np.take_along_axis(np.cumsum(hit, axis=1), end, axis=1) / (end + 1.0)
        result.append(np.where(hit, precision, 0.0).sum(axis=1) / size)
    return np.stack(result)



def _ap_partition(block: np.ndarray, classes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One-vs-rest AP (classes x units) of float32 scores for rows in disjoint classes.

    One integer sort per unit yields the classes in rank order; a stable radix sort of those gives each class's
    ranks in order, so its k-th best row contributes precision k / rank. Units with tied scores count each tied
    group at its last rank instead, as sklearn does.
    """
    keys = _sorted_keys(block, classes)
    ranked_classes = (keys & 0xFF).astype(np.uint8)
    ties = ((keys[:, 1:] ^ keys[:, :-1]).view(np.uint64) < 256).any(axis=1)  # equal scores, any classes
    ranks = np.argsort(ranked_classes, axis=1, kind="stable") + 1.0
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    gained = np.concatenate([np.arange(1, size + 1) for size in sizes]) / ranks
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.stack([gained[:, a:b].sum(axis=1) / (b - a) for a, b in zip(bounds[:-1], bounds[1:])])
        if ties.any():
            ap[:, ties] = _tied_ap(keys[ties] >> 8, ranked_classes[ties], sizes)
    return ap



def _one_vs_rest(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """(row classes, class sizes, class of each label column) problems covering every label column."""
    if (labels.sum(axis=1) == 1).all() and labels.shape[1] < 256:
        classes = labels.argmax(axis=1)
        return [(classes, np.bincount(classes, minlength=labels.shape[1]), list(range(labels.shape[1])))]
    return [(labels[:, c].astype(np.int64), np.bincount(labels[:, c], minlength=2), [-1, c])
            for c in range(labels.shape[1])]



def average_precision(scores: np.ndarray, labels: np.ndarray, chunk: int = 512) -> np.ndarray:
    """AP of every column of scores (n x units) for each label column (n x classes): classes x units.

    Equal to sklearn.metrics.average_precision_score column by column, ties included. For float32 scores one
    integer sort per unit serves every class when each row has exactly one label, and blocks of units run on
    torch's CPU threads (numpy releases the GIL); other dtypes take a slower float sort.
    """
    labels = np.asarray(labels, dtype=bool).reshape(len(scores), -1)
    if scores.dtype != np.float32:
        return _exact_ap(scores, labels)
    result = np.empty((labels.shape[1], scores.shape[1]))
    starts = range(0, scores.shape[1], chunk)
    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(starts)))) as pool:
        for classes, sizes, columns in _one_vs_rest(labels):
            blocks = pool.map(_ap_partition, (scores[:, s:s + chunk] for s in starts), repeat(classes), repeat(sizes))
            for start, ap in zip(starts, blocks):
                for row, column in enumerate(columns):
                    if column >= 0:
                        result[column, start:start + chunk] = ap[row]
    return result
