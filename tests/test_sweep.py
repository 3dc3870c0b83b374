"""Sweeps on a toy project: one output per grid point, per-point up-to-date check, run order, the sweeps page."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from toy_project import notebook, toy_project

from companion.core.errors import UserError
from companion.publish import cli, profiles, schedule, sweep, sweep_page
from companion.publish.book import write_generated_pages
from companion.publish.runner import run


def _statuses(outcomes) -> dict[str, str]:
    return {o.name: o.status for o in outcomes}


def test_parse_grid_and_labels() -> None:
    sweeps = sweep.parse_sweeps(["seed=[0,1]", "model=[a/b, c]"])
    assert sweep.grid(sweeps) == [{"seed": 0, "model": "a/b"}, {"seed": 0, "model": "c"},
                                  {"seed": 1, "model": "a/b"}, {"seed": 1, "model": "c"}]
    assert sweep.label({"model": "CohereForAI/aya-23-8B", "seeds": [0, 1]}) == "model=CohereForAI_aya-23-8B,seeds=_0_1_"
    assert sweep.grid({}) == [{}]
    for bad in ("seed", "seed=1", "seed=[]", "=[1]", "seed=[1"):
        with pytest.raises(UserError, match=r"must look like KEY=\[v1,v2,...\]"):
            sweep.parse_sweeps([bad])
    with pytest.raises(UserError, match="given twice"):
        sweep.parse_sweeps(["seed=[0]", "seed=[1]"])


def test_sweep_keeps_points_apart_and_skips_per_point(tmp_path: Path) -> None:
    project = toy_project(tmp_path)
    outcomes = run(project, "smoke", sweeps=["x=[2,3]"])
    assert _statuses(outcomes) == {"alpha/x=2": "ran", "alpha/x=3": "ran", "beta": "ran"}  # beta has no x: runs once
    point = json.loads((project.results / "alpha" / "x=3.json").read_text())
    assert point["point"] == {"x": 3} and point["parameters"]["x"] == 3 and point["metrics"]["y"] == 6
    assert (project.generated / "alpha" / "x=2.ipynb").exists()
    assert not (project.results / "alpha.json").exists(), "a sweep leaves the plain run's results alone"
    again = run(project, "smoke", sweeps=["x=[3,4]"])
    assert _statuses(again) == {"alpha/x=3": "skipped", "alpha/x=4": "ran", "beta": "skipped"}
    assert _statuses(run(project, "smoke", sweeps=["x=[2]", "seed=[0,1]"])) == {
        "alpha/x=2,seed=0": "ran", "alpha/x=2,seed=1": "ran", "beta": "skipped"}


def test_failing_point_reported_while_others_land(tmp_path: Path) -> None:
    project = toy_project(tmp_path)
    outcomes = {o.name: o for o in run(project, "smoke", only="alpha", sweeps=["x=[0,5]"])}
    assert outcomes["alpha/x=5"].status == "ran" and outcomes["alpha/x=0"].status == "failed"
    assert "AssertionError: x must not be zero" in outcomes["alpha/x=0"].message
    assert (project.results / "alpha" / "x=5.json").exists() and not (project.results / "alpha" / "x=0.json").exists()
    assert (project.generated / "alpha" / "x=0.failed.ipynb").exists()


def test_sweep_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    project = toy_project(tmp_path)
    with pytest.raises(UserError, match="both --set and --sweep"):
        run(project, "smoke", sets=["x=1"], sweeps=["x=[1,2]"])
    with pytest.raises(UserError, match="no parameter 'xx'"):
        run(project, "smoke", sweeps=["xx=[1,2]"])
    with pytest.raises(UserError, match="same file name"):
        run(project, "smoke", sweeps=["tag=[a/b,a_b]"])
    assert cli.main(["--root", str(project.root), "run", "--sweep", "x=1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not project.generated.exists(), "nothing is written on a user error"


def test_after_orders_runs_and_failed_prerequisite_stops_dependents(tmp_path: Path) -> None:
    order = "after:\n  alpha: [gamma]\n  beta: [alpha]\n"
    project = toy_project(tmp_path, order)
    notebook(project.notebooks / "gamma.ipynb", "x: int = 1",
             "open('gamma.done', 'w').write('ok')\nassert x != 0, 'x must not be zero'", "metrics = {}")
    package = "import pathlib\nSCALE = len(pathlib.Path('gamma.done').read_text())\n"  # fails unless gamma ran first
    (project.root / "src" / "toypkg" / "__init__.py").write_text(package)
    assert _statuses(run(project, "smoke", jobs=2)) == {"alpha": "ran", "beta": "ran", "gamma": "ran"}
    assert json.loads((project.results / "alpha.json").read_text())["metrics"]["y"] == 2  # gamma ran first
    outcomes = {o.name: o for o in run(project, "smoke", sweeps=["x=[0]"])}
    assert outcomes["gamma/x=0"].status == "failed" and outcomes["alpha/x=0"].status == "failed"
    assert "not run: it needs gamma/x=0, which failed" in outcomes["alpha/x=0"].message
    assert outcomes["beta"].status == "skipped"


@pytest.mark.parametrize(("profile", "message"), [
    ("after:\n  alpha: [beta]\n  beta: [alpha]\n", "waiting for itself"),
    ("after:\n  alpha: [nope]\n", "'nope' does not exist"),
    ("after:\n  alpha: beta\n", "must be a list"),
    ("resources:\n  all: {gpu: 1}\n", "unknown key 'gpu'"),
    ("resources:\n  alpha: {cpus: -1}\n", "non-negative number"),
    ("resources:\n  alpah: {cpus: 1}\n", "notebook 'alpah', which does not exist"),
    ("minutes:\n  alpah: 3\n", "minutes: notebook 'alpah' does not exist"),
    ("minutes:\n  alpha: soon\n", "minutes.alpha must be a non-negative number"),
    ("minutes: 3\n", "'minutes' must be a mapping"),
])
def test_profile_order_and_resources_errors(tmp_path: Path, profile: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        run(toy_project(tmp_path, profile), "smoke")


def test_unknown_executor_and_stray_address(tmp_path: Path) -> None:
    project = toy_project(tmp_path)
    with pytest.raises(UserError, match="--executor 'dask' is unknown"):
        run(project, "smoke", executor="dask")
    with pytest.raises(UserError, match="needs --executor ray"):
        run(project, "smoke", address="auto")
    with pytest.raises(UserError, match="--jobs 2 is for the local executor"):
        run(project, "smoke", executor="ray", jobs=2)


def test_sweep_page_puts_points_side_by_side(tmp_path: Path) -> None:
    project = toy_project(tmp_path)
    assert "No sweep has been run" in sweep_page.render(project.results)
    run(project, "smoke", only="alpha", sweeps=["x=[2,3]"])
    write_generated_pages(project.generated)
    page = (project.generated / "sweeps.md").read_text()
    assert "## alpha" in page and "`x=2`" in page and "`x=3`" in page
    assert "| y | 4 [3, 5] | 6 [5, 7] |" in page, "the metric with an interval, one column per point"
    assert "| seed |" not in page, "numbers without intervals are left out when some have one"


def test_sweep_page_prefers_primary() -> None:
    metrics = {"primary": {"ratio": 1.5, "ratio_ci": [1.1, 1.9], "layer": 9,
                           "targets": [{"target": "fr", "share": 0.5, "share_ci": [0.4, 0.6]}]},
               "best": 3.0, "best_ci": [2.0, 4.0]}
    assert sweep_page.headline(metrics) == [("primary.ratio", 1.5, [1.1, 1.9]), ("primary.layer", 9.0, None),
                                            ("primary.targets.fr.share", 0.5, [0.4, 0.6])]


def test_ctrl_c_cancels_and_keeps_last_good_output(tmp_path: Path) -> None:
    project = toy_project(tmp_path)
    notebook(project.notebooks / "slow.ipynb", "seconds: int = 0", "import time\ntime.sleep(seconds)", "metrics = {}")
    run(project, "smoke", only="slow")
    good = {p: p.read_bytes() for p in (project.generated / "slow.ipynb", project.results / "slow.json")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project.source.parent), *sys.path])}
    command = [sys.executable, "-m", "companion.publish.cli", "--root", str(project.root), "run", "--profile", "smoke",
               "--only", "slow", "--set", "seconds=120"]
    # As from a terminal: SIGINT at its default (a test run may have left it ignored, and children inherit that).
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint) as process:
        for line in process.stderr:
            if "slow: cell 2/" in line:  # the sleeping cell is next
                break
        process.send_signal(signal.SIGINT)
        try:
            _, rest = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"no exit within 120 s of Ctrl-C; stderr: {process.communicate()[1][-2000:]}")
    assert process.returncode == 130
    assert "interrupted; cancelled 1 running and 0 waiting notebook(s)" in rest
    assert all(path.read_bytes() == content for path, content in good.items()), "the last good outputs stay"


def test_sweep_page_without_intervals_shows_what_differs(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "gamma"
    folder.mkdir(parents=True)
    for seed, b in ((0, 2), (1, 3)):
        payload = {"profile": "smoke", "point": {"seed": seed}, "metrics": {"a": 1, "b": b, "c": {"d": 0.25}}}
        (folder / f"seed={seed}.json").write_text(json.dumps(payload))
    page = sweep_page.render(tmp_path / "results")
    assert "| b | 2 | 3 |" in page and "| a |" not in page and "| c.d |" not in page


def test_ray_is_imported_only_for_the_ray_executor() -> None:
    code = ("import sys; import companion.publish.cli, companion.publish.runner, companion.publish.executors; "
            "print('ray' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "False"


def test_sweep_page_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    project = toy_project(tmp_path / "project")
    run(project, "smoke", only="alpha", sweeps=["x=[2,3]"])
    book = tmp_path / "book"
    book.mkdir()
    (book / "_toc.yml").write_text("format: jb-book\nroot: sweeps\n")
    (book / "_config.yml").write_text("title: sweeps\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: 'off'\n")
    (book / "sweeps.md").write_text(sweep_page.render(project.results))
    shutil.copytree(project.generated / "alpha", book / "alpha")  # executed points beside it, outside the toc
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    built = subprocess.run([str(jupyter_book), "build", str(book), "-W", "--keep-going"], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert "6 [5, 7]" in (book / "_build" / "html" / "sweeps.html").read_text()


def _task(name: str) -> sweep.Task:
    """A bare task for the scheduler (no notebook file needed)."""
    return sweep.Task(profiles.Notebook(path=Path(f"{name}.ipynb"), name=name, defaults={}, annotations={}), {}, {}, name)


def test_longest_chain_starts_first() -> None:
    # a short notebook first by name, a long chain (b then c) and a long single notebook (d)
    tasks = [_task(name) for name in ("a", "b", "c", "d")]
    after = {"c": ["b"]}
    order = [t.output for t in schedule.longest_chain_first(tasks, after, {"a": 60, "b": 600, "c": 3000, "d": 3000})]
    assert order == ["b", "c", "d", "a"]  # b heads 3600 s of work, d 3000 s, a 60 s
    # without estimates every chain counts 0 and the given (name) order stays
    assert [t.output for t in schedule.longest_chain_first(tasks, after, {})] == ["a", "b", "c", "d"]
    # a dependent's length counts through every path: b needs nothing but heads c, which heads d
    order = [t.output for t in schedule.longest_chain_first(tasks, {"c": ["b"], "d": ["c"]}, {"a": 100, "b": 1, "c": 1, "d": 1})]
    assert order == ["a", "b", "c", "d"]
    order = [t.output for t in schedule.longest_chain_first(tasks, {"c": ["b"], "d": ["c"]}, {"a": 100, "b": 1, "c": 1, "d": 99})]
    assert order == ["b", "a", "c", "d"]  # b heads 101 s


def test_profile_minutes_decide_which_ready_notebook_starts(tmp_path: Path) -> None:
    project = toy_project(tmp_path, "minutes:\n  beta: 5\n  alpha: 1\n")
    notebook(project.notebooks / "alpha.ipynb", "x: int = 1", "open('order.txt', 'a').write('alpha ')", "metrics = {}")
    notebook(project.notebooks / "beta.ipynb", "z: int = 1", "open('order.txt', 'a').write('beta ')", "metrics = {}")
    assert _statuses(run(project, "smoke", jobs=1)) == {"alpha": "ran", "beta": "ran"}
    assert (project.root / "order.txt").read_text().split() == ["beta", "alpha"]  # the longer one first, not by name


@pytest.mark.parametrize(("error", "runs", "status"), [
    ("Kernel didn't respond in 60 seconds", 2, "ran"),  # a kernel that never came up is started once more
    ("Kernel didn't respond in 60 seconds, twice", 2, "failed"),  # ... but not forever
    ("something else broke", 1, "failed"),  # any other error is the notebook's, reported at once
])
def test_a_kernel_that_never_started_is_started_again(tmp_path: Path, monkeypatch, capsys, error: str, runs: int,
                                                       status: str) -> None:
    import papermill

    project, calls, real = toy_project(tmp_path), [], papermill.execute_notebook

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1 or "twice" in error:
            raise RuntimeError(error)
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    outcome = {o.name: o for o in run(project, "smoke", only="beta")}["beta"]
    assert (len(calls), outcome.status) == (runs, status)
    assert ("starting it again" in capsys.readouterr().err) == error.startswith("Kernel")


VARIANTS = """notebooks:
  alpha: {x: 2}
variants:
  two: {}
  three: {all: {x: 3}}
  nine: {all: {x: 9}, notebooks: {alpha: {tag: b}, beta: {z: 9}}}
"""


def test_variants_are_named_rows_of_settings_run_alone_or_side_by_side(tmp_path: Path) -> None:
    project = toy_project(tmp_path, VARIANTS)
    merged = profiles.load_profile(project.profiles, "smoke")
    notebooks = profiles.discover(project.notebooks)
    resolved = profiles.resolve(notebooks, notebooks, merged, {"variant": "nine", "z": 4}, "smoke")
    assert resolved["alpha"] == {"x": 9, "seed": 0, "tag": "b"}, "the variant goes over the profile's notebook values"
    assert resolved["beta"] == {"z": 4}, "--set goes over the variant"
    where = profiles.origin(merged, {"z": 4}, "smoke", {"variant": "nine"})
    assert [where("alpha", key) for key in ("x", "seed")] == ["from variant 'nine' of profile 'smoke'", "the notebook's default"]
    assert where("beta", "z") == "from --set" and profiles.origin(merged, {}, "smoke", {"x": 1})("alpha", "x") == "from --sweep"
    outcomes = run(project, "smoke", only="alpha", sweeps=["variant=[two,three,nine]"])
    assert _statuses(outcomes) == {"alpha/variant=two": "ran", "alpha/variant=three": "ran", "alpha/variant=nine": "ran"}
    point = json.loads((project.results / "alpha" / "variant=nine.json").read_text())
    assert point["point"] == {"variant": "nine"} and point["metrics"]["y"] == 18 and point["parameters"]["tag"] == "b"
    assert json.loads((project.results / "alpha" / "variant=two.json").read_text())["metrics"]["y"] == 4, \
        "an empty variant is the profile as written, and still a point of its own"
    assert _statuses(run(project, "smoke", sweeps=["variant=[two,three]"])) == {
        "alpha/variant=two": "skipped", "alpha/variant=three": "skipped", "beta": "ran"}, "no swept variant sets beta"
    assert _statuses(run(project, "smoke", sets=["variant=three"])) == {"alpha": "ran", "beta": "skipped"}
    assert json.loads((project.results / "alpha.json").read_text())["metrics"]["y"] == 6


@pytest.mark.parametrize(("profile", "argv", "message"), [
    (VARIANTS, ["--set", "variant=nien"], "variant=nien: profile 'smoke' has no variant 'nien' (did you mean 'nine'?); "
                                          "its variants: two, three, nine"),
    ("description: toy\n", ["--sweep", "variant=[a,b]"], "variant=a: profile 'smoke' declares no variants"),
    (VARIANTS, ["--set", "variant=two", "--sweep", "variant=[two]"], "'variant' is both --set and --sweep"),
    ("variants:\n  big: {all: {xx: 1}}\n", [], "profile 'smoke' variant 'big' (all): notebooks alpha, beta have no "
                                               "parameter 'xx' (did you mean 'x'?)"),
    ("variants:\n  big: {notebooks: {gamma: {x: 1}}}\n", [], "profile 'smoke' variant 'big' names notebook 'gamma'"),
    ("variants:\n  big: {notebooks: {beta: {x: 1}}}\n", [], "profile 'smoke' variant 'big': notebook beta has no parameter 'x'"),
    ("variants:\n  big: {x: 1}\n", [], "variants.big must be a mapping like {all: "),
    ("variants:\n  big: [x]\n", [], "variants.big must be a mapping like {all: "),
    ("variants:\n  big: {notebooks: {beta: 3}}\n", [], "variants.big must be a mapping like {all: "),
    ("variants: [big]\n", [], "'variants' must be a mapping"),
    ("variants:\n  big: {all: {x: many}}\n", ["--sweep", "variant=[big]", "--dry-run"],
     "alpha: x='many' (from variant 'big' of profile 'smoke') is not int"),
])
def test_variant_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, profile: str, argv: list[str],
                                     message: str) -> None:
    project = toy_project(tmp_path, profile)
    assert cli.main(["--root", str(project.root), "run", "--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not project.generated.exists(), "nothing is written on a user error"
