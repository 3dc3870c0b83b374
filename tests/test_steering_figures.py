"""The steering figures that depend on what was run: only the pairs run are drawn, with the control beside them."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from companion.steering import figures  # noqa: E402

PIVOT = [("en", "fr"), ("fr", "en"), ("en", "ru"), ("ru", "en")]


def sweep(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """A sweep frame: experts at two k and the control at the primary k, two layers."""
    return pd.DataFrame([{"src": src, "tgt": tgt, "layer": layer, "k": k, "selection": arm, "top1_pre": 0.2 + 0.1 * i,
                          "top1_post": 0.3 + 0.1 * i if arm == "experts" else 0.15, "change": 0.1}
                         for i, (src, tgt) in enumerate(pairs) for layer in (3, 9) for k in (40, 400)
                         for arm in ("experts", "random-target")])


def test_retrieval_pairs_draws_the_pairs_that_were_run_before_after_and_control() -> None:
    drawn = figures.retrieval_pairs(sweep(PIVOT), 40, 9, "random-target")
    ax = drawn.figure.axes[0]
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["en→fr", "fr→en", "en→ru", "ru→en"]
    assert ax.get_yticks().tolist() == [3, 2, 1, 0]  # the first pair on top
    assert [text.get_text() for text in drawn.figure.legends[0].get_texts()] == [
        "before forcing", "after forcing the target's experts (k=40)", "after forcing 40 random units (random-target)"]
    before, after, control = (collection.get_offsets() for collection in ax.collections)
    assert before[:, 0].tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5]) and control[:, 0].tolist() == pytest.approx([0.15] * 4)
    assert after[:, 0].tolist() == pytest.approx([0.3, 0.4, 0.5, 0.6]) and ax.get_xlabel().startswith("top-1 accuracy")
    assert "4 ordered pairs that were run" in drawn.caption and "crosses" in drawn.caption and "en→fr" in drawn.alt
    alone = figures.retrieval_pairs(sweep(PIVOT[:2]), 40, 9)
    assert "crosses" not in alone.caption and len(alone.figure.axes[0].collections) == 2


def test_generation_figures_draw_the_control_at_every_k_once_per_target() -> None:
    """The control at each k > 0 is one dotted line per target: one legend entry each, no repeats."""
    share = pd.DataFrame([{"target": t, "k": k, "selection": arm, "mean": 0.5, "low": 0.4, "high": 0.6, "perplexity": 9.0}
                          for t in ("de", "fr") for k in (0, 10, 20)
                          for arm in (["experts"] + (["random-target"] if k else []))])
    for draw in (figures.generation_share, figures.generation_perplexity):
        drawn = draw(share, ["de", "fr"])
        labels = drawn.figure.axes[0].get_legend_handles_labels()[1]
        assert labels == ["de", "de, random units (random-target)", "fr", "fr, random units (random-target)"]
        assert [t.get_text() for t in drawn.figure.axes[0].get_xticklabels()] == ["0", "10", "20"]
        assert "dotted lines with crosses are" in drawn.caption and "same k" in drawn.caption
        assert "one dotted line of crosses per target" in drawn.alt


def test_generation_figures_with_one_k_say_the_control_is_a_cross() -> None:
    """The default book runs k = 0 and 2000: the control is one cross per target, with no line to join, and says so."""
    share = pd.DataFrame([{"target": t, "k": k, "selection": arm, "mean": 0.5, "low": 0.4, "high": 0.6, "perplexity": 9.0}
                          for t in ("de", "fr") for k in (0, 2000)
                          for arm in (["experts"] + (["random-target"] if k else []))])
    for draw in (figures.generation_share, figures.generation_perplexity):
        drawn = draw(share, ["de", "fr"])
        assert [t.get_text() for t in drawn.figure.axes[0].get_xticklabels()] == ["0", "2,000"]
        assert "crosses are" in drawn.caption and "dotted" not in drawn.caption
        assert "one cross per target" in drawn.alt and "dotted" not in drawn.alt
        ax = drawn.figure.axes[0]
        anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        assert anchor.x0 >= 1.0, "the legend sits to the right of the data, where it hides no control cross"


def test_by_layer_ratio_is_the_ratio_of_the_means_shown_beside_it() -> None:
    """The layer table's ratio is after / before of its own columns (as in the primary row), not a mean of pair ratios."""
    from companion.steering.retrieval import by_layer

    frame = sweep(PIVOT)
    frame = frame.assign(ratio=frame["top1_post"] / frame["top1_pre"])
    summary = by_layer(frame)
    assert list(summary["ratio"]) == pytest.approx(list(summary["top1_post"] / summary["top1_pre"]))


def test_projections_fit_both_stages_together_with_pca_and_with_umap_when_asked():
    """The embedding-space page's projections: one fit over before and after, split back into (before, after)."""
    from types import SimpleNamespace

    import numpy as np
    import umap
    from sklearn.decomposition import PCA

    from companion.steering import space
    from companion.steering.alignment import normalise

    rng = np.random.default_rng(0)
    languages = ["en", "de"]
    pre = {code: rng.normal(3.0 * i, 1.0, (1, 20, 8)) for i, code in enumerate(languages)}  # (layers, n, dim)
    post = {code: values + 0.5 for code, values in pre.items()}
    lab = SimpleNamespace(settings=SimpleNamespace(seed=0, center=False), languages=languages)
    points = space.projections(lab, pre, post, 0, use_umap=True)
    assert set(points) == {"PCA", "UMAP"}
    for before, after in points.values():
        assert before.shape == after.shape == (40, 2)
    stacked = np.concatenate([np.concatenate([emb[code][0] for code in languages]) for emb in (pre, post)])
    assert np.allclose(np.concatenate(points["PCA"]), PCA(n_components=2, random_state=0).fit_transform(
        normalise(stacked, False))), "PCA is fitted on both stages at once, before rows first"
    direct = umap.UMAP(n_components=2, random_state=0, metric="cosine").fit_transform(normalise(stacked, False))
    assert np.allclose(np.concatenate(points["UMAP"]), direct), "UMAP too is one fit over both stages, before rows first"
    pca_only = space.projections(lab, pre, post, 0, use_umap=False)
    assert set(pca_only) == {"PCA"}
    names = np.array([code for code in languages for _ in range(20)])
    drawn = figures.space_projections(pca_only, names, 9, "en", 40)
    assert [ax.get_title().split(",")[0] for ax in drawn.figure.axes] == ["PCA", "PCA"]
    assert drawn.figure.axes[0].get_shared_x_axes().joined(*drawn.figure.axes), "before and after share their axes"
    assert "(PCA, one fit over both stages" in drawn.caption


def test_alignment_layers_draws_separability_in_black_so_no_language_colour_is_reused() -> None:
    from matplotlib.colors import to_rgb

    rows = [{"stage": stage, "layer": layer, "language": lang, "top1": 0.3, "cosine_gap": 0.1, "silhouette_all": 0.2}
            for stage in ("before", "after") for layer in range(3) for lang in ("de", "fr")]
    fig = figures.alignment_layers(pd.DataFrame(rows), "en").figure
    languages = {to_rgb(line.get_color()) for line in fig.axes[0].get_lines()}
    separability = fig.axes[2].get_lines()
    assert {to_rgb(line.get_color()) for line in separability} == {(0.0, 0.0, 0.0)}
    assert (0.0, 0.0, 0.0) not in languages and [line.get_linestyle() for line in separability] == ["--", "-"]
