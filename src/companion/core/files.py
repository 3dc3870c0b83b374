"""File helpers shared by the caches and results: checksums, and writes that land whole or not at all."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside path; on success it replaces path in one rename, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside folder; on success it replaces folder, on error it is removed."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        yield staging
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def computing(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a cache entry while it is read or computed: a second process on this machine that needs
    the same entry waits for the first to write it, then reads it, instead of computing it again. The lock files live
    in the temp folder (named by a hash of the entry's path), so cache folders hold entries only."""
    name = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    lock = Path(tempfile.gettempdir()) / "companion-locks" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_entry(path: Path, load: Callable[[], T | None], compute: Callable[[], T], save: Callable[[T, Path], None]) -> T:
    """The cache entry at path, under its lock: load() when it is there and whole (load returns None for a missing,
    unreadable or wrong entry), else compute() and save(value, temporary path), renamed onto path in one step."""
    with computing(path):
        found = load()
        if found is not None:
            return found
        value = compute()
        with staged_file(path) as tmp:
            save(value, tmp)
        return value
