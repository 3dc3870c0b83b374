"""Every kind of bad input is refused before any notebook starts: exit code 2, one line, nothing written or changed."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toy_project import real_project

from companion.core.errors import UserError
from companion.publish import cli, param_types, preflight, profiles

ROOT = Path(__file__).resolve().parents[1]
PAIR = {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real notebooks and profiles (source linked), with earlier outputs standing in book/_generated."""
    root = tmp_path_factory.mktemp("preflight")
    real_project(root)
    results = root / "book" / "_generated" / "results"
    results.mkdir(parents=True)
    for nb in profiles.discover(root / "notebooks"):
        (results / f"{nb.name}.json").write_text(json.dumps({"notebook": nb.name, "provenance": {"input_hash": "old"}}))
        (results.parent / f"{nb.name}.ipynb").write_text("{}")
    files = root / "files"
    files.mkdir()
    (files / "mine.tsv").write_text("en\txx\n" + "".join(f"Sentence {i}.\tSatz {i}.\n" for i in range(80)))
    (files / "gap.tsv").write_text("en\txx\nOne.\tEins.\nTwo.\t \n")
    (files / "mine.csv").write_text("en,xx\nOne.,Eins.\n")
    (files / "folder.tsv").mkdir()
    (files / "bad.jsonl").write_text("\n".join([json.dumps(PAIR), json.dumps(PAIR), json.dumps({"prompt": "x", "chosen": "y"})]))
    (files / "broken.jsonl").write_text(json.dumps(PAIR) + "\n{not json\n")
    (files / "same.jsonl").write_text(json.dumps({**PAIR, "rejected": PAIR["chosen"]}) + "\n")
    (files / "one.jsonl").write_text(json.dumps(PAIR) + "\n")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under book/ with its modification time and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted((root / "book").rglob("*")) if p.is_file()}


# (--only, --set values, what the one line must say): one row per kind of bad input.
REFUSALS = [
    ("steering_1*", ["languages=[en,xx]"], "unknown language 'xx'"),
    ("steering_1*", ["languages=[en,ja]"], "not public domain"),
    ("steering_1*", ["languages=[en,en]"], "repeat a code"),
    ("steering_1*", ["languages=[en]"], "fewer than two languages"),
    ("steering_1*", ["parallel_path={files}/mine.tsv", "languages=[en,de]"], "has no column for ['de']"),
    ("steering_1*", ["parallel_path={files}/missing.tsv"], "does not exist"),
    ("steering_1*", ["parallel_path={files}/mine.csv"], "must end in .tsv or .jsonl"),
    ("steering_1*", ["parallel_path={files}/gap.tsv", "languages=[en,xx]"], "line 3 has empty cells (first: 'xx')"),
    ("steering_1*", ["parallel_path={files}/folder.tsv"], "cannot be read"),
    ("steering_1*", ["k_values=fifty"], "is not list[int]"),
    ("steering_1*", ["k_values=[]"], "is empty"),
    ("steering_1*", ["k_values=[10, 100000]"], "more experts than the 36,864 units of gemma-3-270m"),
    ("steering_1*", ["n_find=0"], "must be >= 1"),
    ("steering_1*", ["n_find=100000"], "larger than the"),
    ("steering_1*", ["model_name=gemma3"], "did you mean 'gemma-3-270m'"),
    ("steering_1*", ["model_name=nobody/no-such-model"], "not in the local Hugging Face cache and HF_HUB_OFFLINE=1"),
    ("steering_1*", ["model_name={files}"], "folder without config.json"),
    ("steering_1*", ["corpus=nobody/no-such-corpus"], "not in the local Hugging Face cache"),
    ("steering_1*", ["units=(mlp"], "not a regular expression"),
    ("steering_1*", ["dtype=float33"], "not a torch floating-point dtype"),
    ("dpo_2*", ["precision=float16"], "is not allowed; use 'auto' or 'float32' or 'bfloat16'"),
    ("steering_1*", ["pooling=median"], "is not allowed; use 'mean' or 'max'"),
    ("steering_1*", ["threads=0"], "must be >= 1"),
    ("steering_1*", ["seed=-1"], "must be >= 0"),
    ("steering_2*", ["controls=[random]"], "is not allowed"),
    ("steering_2*", ["prompt_language=de"], "is not one of languages"),
    ("steering_3*", ["layers=[0, 40]"], "outside gemma-3-270m (layers 0..17)"),
    ("steering_3*", ["projection_layer=5"], "is not among layers"),
    ("steering_3*", ["steer_to=de"], "is not one of languages"),
    ("steering_3*", ["k=100000"], "more experts than"),
    ("steering_3*", ["n_eval=null"], "is not int"),
    ("steering_3*", ["center=maybe"], "is not bool"),
    ("steering_4*", ["protocol=one"], "is not allowed; use 'source' or 'both'"),
    ("00_*", ["models=[gemma-3-270m, nope]"], "is not a known model"),
    ("dpo_1*", ["preference_path={files}/bad.jsonl"], "line 3: missing or empty ['rejected']"),
    ("dpo_1*", ["preference_path={files}/broken.jsonl"], "line 2: not valid JSON"),
    ("dpo_1*", ["preference_path={files}/same.jsonl"], "line 1: chosen equals rejected"),
    ("dpo_1*", ["preference_path={files}/one.jsonl"], "needs at least 2"),
    ("dpo_1*", ["preference_path={files}/missing.jsonl"], "does not exist"),
    ("dpo_1*", ["preference_path={files}"], "cannot be read"),
    ("dpo_1*", ["test_fraction=1.5"], "strictly between 0 and 1"),
    ("dpo_1*", ["hub_dataset=nobody/no-such-set"], "not in the local Hugging Face cache"),
    ("dpo_1*", ["model=google/no-such-model"], "not in the local Hugging Face cache"),
    ("dpo_2*", ["beta=1e-4"], "write 1.0e-4"),
    ("dpo_2*", ["beta=0"], "must be > 0"),
    ("dpo_2*", ["seeds=[]"], "is empty"),
    ("dpo_3*", ["ood=[rt-prompts, no-such-set]"], "not among sets="),
]


@pytest.mark.parametrize(("only", "sets", "message"), REFUSALS, ids=[f"{r[1][-1]}" for r in REFUSALS])
def test_bad_input_refused_before_anything_runs(project: Path, capsys: pytest.CaptureFixture, only: str, sets: list[str],
                                                message: str) -> None:
    before = _snapshot(project)
    argv = ["--root", str(project), "run", "--profile", "smoke", "--only", only]
    for item in sets:
        argv += ["--set", item.format(files=project / "files")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert any(f" {item.split('=')[0]}=" in err for item in sets), "the line names the parameter"
    assert "from --set" in err, "the line says where the value came from"
    assert _snapshot(project) == before, "no results or executed notebook changed"
    assert not list((project / "book" / "_generated").rglob(".*")), "no staging files left behind"


def test_every_profile_passes_the_checks(project: Path, capsys: pytest.CaptureFixture) -> None:
    for profile in ("smoke", "default"):
        assert cli.main(["--root", str(project), "run", "--profile", profile, "--dry-run"]) == 0
    assert "would run" in capsys.readouterr().out
    assert cli.main(["--root", str(project), "run", "--profile", "paper", "--dry-run"]) == 2, "hub models, offline"
    assert "is not in the local Hugging Face cache" in capsys.readouterr().err


def test_profile_value_named_as_from_the_profile(project: Path, capsys: pytest.CaptureFixture) -> None:
    (project / "notebooks" / "profiles" / "typo.yaml").write_text("notebooks:\n  steering_1_experts: {languages: [en, xx]}\n")
    try:
        assert cli.main(["--root", str(project), "run", "--profile", "typo", "--only", "steering_1*"]) == 2
    finally:
        (project / "notebooks" / "profiles" / "typo.yaml").unlink()
    assert "languages=['en', 'xx'] (from profile 'typo')" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "default", "annotation", "ok"),
    [
        ([1, 2], [50], None, True), (["a"], [50], None, False), (1, 0.5, None, True), (True, 1, None, False),
        ("x", None, None, True), (None, None, "str | None", True), (3, None, "str | None", False),
        (None, "", "str", False), (["en"], [], "list[str]", True), ([1], [], "list[str]", False),
        ("max", "mean", "Literal['mean', 'max']", True), ("sum", "mean", "Literal['mean', 'max']", False),
        ({"a": 1}, {}, "dict[str, int]", True), (None, None, "Optional[int]", True), (2, 1, "MyType", True),
    ],
)
def test_parameter_types_from_annotation_or_default(value, default, annotation, ok) -> None:
    assert param_types.fits(value, default, annotation)[0] is ok


def test_unknown_names_get_the_type_check_only() -> None:
    assert preflight.check_for("n_anything") is not None, "n_* counts are checked by pattern"
    assert preflight.check_for("brand_new_parameter") is None


@pytest.mark.smoke
@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m"])
def test_embedded_shapes_match_the_converted_configs(name: str) -> None:
    from companion.core import models

    config = json.loads((models.embedded_cache_dir(name) / "config.json").read_text())
    spec = models.EMBEDDED[name]
    assert (spec.layers, spec.units_per_layer) == (config["num_hidden_layers"], config["intermediate_size"])


def test_annotations_in_the_parameters_cell_set_the_types(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    source = 'languages: list[str] = ["en", "de"]\nunits: str | None = None\nlayers: list[int] = list(range(3))'
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "toy.ipynb")
    (toy,) = profiles.discover(tmp_path)
    assert toy.annotations == {"languages": "list[str]", "units": "str | None", "layers": "list[int]"}
    assert toy.defaults["layers"] == [0, 1, 2]
    origin = profiles.origin({"all": {}, "notebooks": {}}, {"units": 3}, "smoke")
    with pytest.raises(UserError, match=r"toy: units=3 \(from --set\) is not str \| None; pass a value like units=None"):
        preflight.check([toy], {"toy": {**toy.defaults, "units": 3}}, origin)
    preflight.check([toy], {"toy": {**toy.defaults, "units": "mlp"}}, origin)


def test_the_runner_checks_every_default_notebook_without_loading_torch() -> None:
    """The runner and the workers it forks hold no model, so they never load torch or transformers (about 300 MiB
    each): the parameter checks know the models' shapes, dtypes and choices by name, and the bfloat16 note asks a
    child process whether there is a GPU."""
    script = ("import sys; from companion.publish.cli import main; from companion.core import precision; "
              "rc = main(['run', '--profile', 'default', '--dry-run']); precision.slow_bfloat16_note(True); "
              "print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr
