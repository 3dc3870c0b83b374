"""The GitHub Actions workflow (which cannot run here) calls the README's commands and publishes the built site."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())


def _readme_commands() -> set[str]:
    """The commands shown in the README's bash blocks, one per line, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return {line.split("#")[0].strip() for block in blocks for line in block.splitlines() if line.split("#")[0].strip()}


def _runs(job: str) -> list[str]:
    """The shell commands of a job's steps."""
    return [step["run"].strip() for step in WORKFLOW["jobs"][job]["steps"] if "run" in step]


def _uses(job: str) -> dict[str, dict]:
    """The actions a job uses (name without version) and their inputs."""
    return {step["uses"].split("@")[0]: step.get("with", {}) for step in WORKFLOW["jobs"][job]["steps"] if "uses" in step}


def test_tests_run_on_every_push_and_pull_request() -> None:
    triggers = WORKFLOW.get("on", WORKFLOW.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    assert "make test" in _runs("test") and "make test" in _readme_commands()


def test_main_builds_the_default_book_with_the_companion_cache() -> None:
    book = WORKFLOW["jobs"]["book"]
    assert book["needs"] == "test" and "refs/heads/main" in book["if"] and "pull_request" in book["if"]
    assert "make book" in _runs("book") and "make book" in _readme_commands()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PROFILE \?= default$", makefile, re.M), "make book builds the default profile"
    cached = [step["with"]["path"] for step in book["steps"] if step.get("uses", "").startswith("actions/cache@")]
    assert "~/.cache/companion" in cached and "book/_generated" in cached
    assert "~/.cache/companion" in (ROOT / "README.md").read_text()


def test_the_built_site_is_deployed_to_pages() -> None:
    assert _uses("book")["actions/upload-pages-artifact"]["path"] == "_build/html"
    deploy = WORKFLOW["jobs"]["deploy"]
    assert deploy["needs"] == "book" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert "actions/deploy-pages" in _uses("deploy")
