"""Every `companion ...` command shown in README.md and book/adapting.md works, on the smoke profile.

Executing all of them would run every notebook several times (a smoke run of all notebooks is ~6 min on 2 cores),
so `run` commands get --dry-run (every parameter checked, the plan printed, nothing executed) and the smoke profile
unless they name one; `languages` and `run --help` run for real; `build` is exercised by tests/test_smoke.py on the
executed smoke project. The cheapest real run — one notebook on the user's preference file — executes below.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from toy_project import real_project

from companion.publish import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "book" / "adapting.md"]
PAIRS = [{"prompt": f"Review {i}: the film", "chosen": f"was a delight, scene {i}.", "rejected": f"was a bore, scene {i}."}
         for i in range(24)]


def shown_commands() -> list[str]:
    """The companion command lines in the pages' bash blocks (continuation lines joined) and inline `.venv/bin/companion ...`."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            lines = block.replace("\\\n", " ").splitlines()
            found += [line for line in lines if re.search(r"(^|\s|/)companion\s", line.split("#")[0])]
        found += re.findall(r"(?<!`)`(\.venv/bin/companion [^`\n]+)`", text)
    return list(dict.fromkeys(" ".join(line.split()) for line in found))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real notebooks and profiles (source linked), the page's own profile 'mine', and the user files it names."""
    root = tmp_path_factory.mktemp("readme")
    real_project(root)
    mine = re.search(r"```yaml\n(.*?)```", (ROOT / "book" / "adapting.md").read_text(encoding="utf-8"), flags=re.S)
    assert mine and yaml.safe_load(mine.group(1)), "the adapting page shows the profile 'mine'"
    (root / "notebooks" / "profiles" / "mine.yaml").write_text(mine.group(1))
    (root / "mine.tsv").write_text("en\txx\n" + "".join(f"Sentence {i}.\tSentenz {i}.\n" for i in range(120)))
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return root


def _argv(command: str, root: Path) -> tuple[dict[str, str], list[str]]:
    """Environment assignments and arguments of a shown command, made to run on the test project."""
    words = shlex.split(command.replace("/path/to/", f"{root}/"), comments=True)
    env = {}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words.pop(0).endswith("companion")
    if words[:1] == ["run"] and "--help" not in words:
        words += ["--dry-run"] + ([] if "--profile" in words else ["--profile", "smoke"])
    return env, ["--root", str(root), *words]


def _snapshot(root: Path) -> dict[str, int]:
    """Files under book/ with their modification times."""
    return {str(p): p.stat().st_mtime_ns for p in (root / "book").rglob("*")}


def test_the_pages_show_commands() -> None:
    assert len(shown_commands()) >= 10


@pytest.mark.parametrize("command", [c for c in shown_commands() if " build" not in c], ids=lambda c: c.split("companion ")[1])
def test_shown_command_exits_0(project: Path, command: str, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    env, argv = _argv(command, project)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = _snapshot(project)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # --help
        code = exc.code
    assert code == 0, capsys.readouterr().err
    assert _snapshot(project) == before, "a dry run writes nothing"


@pytest.mark.smoke
def test_own_preference_file_runs_for_real(project: Path) -> None:
    argv = ["--root", str(project), "run", "--profile", "smoke", "--only", "dpo_1_preference_data",
            "--set", f"preference_path={project / 'pairs.jsonl'}", "--set", "threads=1"]
    assert cli.main(argv) == 0
    result = json.loads((project / "book" / "_generated" / "results" / "dpo_1_preference_data.json").read_text())
    assert result["parameters"]["preference_path"] == str(project / "pairs.jsonl")
