"""Test setup: never reach the Hugging Face hub; tiny-model helpers importable; the shared smoke project."""

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from toy_project import real_project  # noqa: E402

from companion.publish.project import Project
from companion.publish.runner import run  # noqa: E402  (after the environment is set)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A copy of the project (notebooks, book, config; source linked) executed with the smoke profile."""
    root = tmp_path_factory.mktemp("smoke")
    real_project(root)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_generated", "_build"))
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    project = Project(root)
    outcomes = run(project, "smoke")
    failed = [o.message for o in outcomes if o.status != "ran"]
    assert not failed, failed
    return project
