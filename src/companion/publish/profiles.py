"""Profiles (smoke/default/paper) and the parameters each notebook declares, checked before anything runs."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from companion.core.errors import UserError, closest

PROFILE_KEYS = ("description", "all", "notebooks", "after", "resources", "minutes", "variants")
VARIANT = "variant"  # --set variant=NAME or --sweep variant=[A,B]: one of the profile's named rows of settings


@dataclass(frozen=True)
class Notebook:
    """A parameterized notebook: its path, its name (file stem), its parameter defaults and their type annotations."""

    path: Path
    name: str
    defaults: dict[str, Any] = field(hash=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False)  # name -> annotation source, e.g. "list[str]"


def cells(path: Path) -> list[dict[str, Any]]:
    """A notebook's cells as stored, each source as one string (read as JSON: nbformat's validation is slow)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"notebook {path} is not valid notebook JSON ({exc}); restore it from git") from exc
    return [{**cell, "source": "".join(cell.get("source", ""))} for cell in stored.get("cells", [])]


def parameters_cell(path: Path) -> str:
    """Source of the cell tagged 'parameters'; an error when the notebook has none."""
    for cell in cells(path):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell["source"]
    raise UserError(f"notebook {path} has no cell tagged 'parameters'; tag its first code cell 'parameters'")


def declared_parameters(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The parameters cell's `name[: annotation] = literal` lines: defaults, and the annotations' source text."""
    source = parameters_cell(path)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UserError(f"notebook {path}: its parameters cell is not valid Python ({exc.msg})") from exc
    defaults: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and node.value is not None:
                    defaults[target.id] = _default_value(path, target.id, node.value)
                    if isinstance(node, ast.AnnAssign):
                        annotations[target.id] = ast.unparse(node.annotation)
    return defaults, annotations


SAFE_BUILTINS = {"range": range, "list": list, "tuple": tuple, "dict": dict, "len": len, "min": min, "max": max}


def _default_value(path: Path, name: str, node: ast.expr) -> Any:
    """A parameter's default: a literal, or a simple expression such as list(range(18))."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    try:
        return eval(compile(ast.Expression(node), str(path), "eval"), {"__builtins__": SAFE_BUILTINS})  # noqa: S307
    except Exception as exc:
        raise UserError(
            f"notebook {path}: parameter '{name}' must be a literal or a simple expression like list(range(18))"
        ) from exc


def discover(notebooks_dir: Path) -> list[Notebook]:
    """Every notebook under notebooks_dir (recursively), sorted by name; names must be unique."""
    found: dict[str, Notebook] = {}
    for path in sorted(notebooks_dir.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        if path.stem in found:
            raise UserError(f"two notebooks are named {path.stem} ({found[path.stem].path}, {path}); rename one")
        defaults, annotations = declared_parameters(path)
        found[path.stem] = Notebook(path=path, name=path.stem, defaults=defaults, annotations=annotations)
    return sorted(found.values(), key=lambda nb: nb.name)


def select(notebooks: list[Notebook], pattern: str | None) -> list[Notebook]:
    """Notebooks whose name matches the shell pattern (all when pattern is None)."""
    if not pattern:
        return notebooks
    chosen = [nb for nb in notebooks if fnmatch(nb.name, pattern) or fnmatch(nb.name, f"{pattern}*")]
    if not chosen:
        names = ", ".join(nb.name for nb in notebooks)
        raise UserError(f"--only '{pattern}' matches no notebook; names are: {names}")
    return chosen


def _read_yaml(path: Path) -> dict[str, Any]:
    """A profile file as a mapping; a malformed file is a user error naming the file and line."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"profile file {path} is not valid YAML{where}; fix the file (see notebooks/profiles/smoke.yaml)") from exc
    if not isinstance(content, dict):
        raise UserError(f"profile file {path} must be a mapping with keys {', '.join(PROFILE_KEYS)}")
    unknown = [key for key in content if key not in PROFILE_KEYS]
    if unknown:
        hint = closest(str(unknown[0]), PROFILE_KEYS)
        raise UserError(
            f"profile file {path}: unknown top-level key '{unknown[0]}'"
            + (f" (did you mean '{hint}'?)" if hint else "") + f"; allowed: {', '.join(PROFILE_KEYS)}"
        )
    for key in PROFILE_KEYS[1:]:  # every key but the description is a mapping
        if not isinstance(content.get(key) or {}, dict):
            raise UserError(f"profile file {path}: '{key}' must be a mapping")
    for name, values in (content.get("notebooks") or {}).items():
        if not isinstance(values or {}, dict):
            raise UserError(f"profile file {path}: notebooks.{name} must be a mapping of parameter: value")
    for name, row in (content.get("variants") or {}).items():
        _check_variant(path, str(name), row)
    return content


def _check_variant(path: Path, name: str, row: Any) -> None:
    """A variant is a mapping with 'all' (parameter: value) and 'notebooks' (notebook: {parameter: value}), both optional."""
    row = {} if row is None else row
    if (not isinstance(row, dict) or any(key not in ("all", "notebooks") for key in row)
            or not all(isinstance(row.get(key) or {}, dict) for key in ("all", "notebooks"))
            or not all(isinstance(values or {}, dict) for values in (row.get("notebooks") or {}).values())):
        raise UserError(f"profile file {path}: variants.{name} must be a mapping like "
                        "{all: {model_name: ...}, notebooks: {NAME: {parameter: value}}}")


def profile_files(profiles_dir: Path, profile: str) -> list[Path]:
    """The files of a profile: NAME.yaml plus fragments PART.NAME.yaml (one per part of the book)."""
    main = profiles_dir / f"{profile}.yaml"
    if not main.exists():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml") if "." not in p.stem)
        raise UserError(f"unknown profile '{profile}'; available: {', '.join(known)} (files in {profiles_dir})")
    return [main, *sorted(profiles_dir.glob(f"*.{profile}.yaml"))]


def load_profile(profiles_dir: Path, profile: str) -> dict[str, Any]:
    """Merge a profile's files into {'all': {...}, 'notebooks': {name: {...}}, 'variants': {name: {...}}, ...}."""
    merged: dict[str, Any] = {"all": {}, "notebooks": {}, "after": {}, "resources": {}, "minutes": {}, "variants": {}}
    for path in profile_files(profiles_dir, profile):
        content = _read_yaml(path)
        for key in ("all", "after", "resources", "minutes"):
            merged[key].update(content.get(key) or {})
        for name, values in (content.get("notebooks") or {}).items():
            merged["notebooks"].setdefault(name, {}).update(values or {})
        for name, row in (content.get("variants") or {}).items():  # a variant may span the files, like the profile
            merged_row = merged["variants"].setdefault(str(name), {"all": {}, "notebooks": {}})
            merged_row["all"].update((row or {}).get("all") or {})
            for notebook, values in ((row or {}).get("notebooks") or {}).items():
                merged_row["notebooks"].setdefault(notebook, {}).update(values or {})
    return merged


def parse_sets(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs, each value parsed as YAML (so [en,sw] is a list and 3 an int)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}' must look like KEY=VALUE, e.g. --set seed=1")
        try:
            parsed[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {key}: value '{raw}' is not valid YAML; quote strings, write lists as [a,b]") from exc
    return parsed


def _unknown_key(notebooks: list[Notebook], key: str, source: str) -> UserError:
    """The error for a key no notebook declares, naming the notebook(s) and the closest declared key."""
    declared = sorted({k for nb in notebooks for k in nb.defaults})
    hint = closest(key, declared)
    names = ", ".join(nb.name for nb in notebooks)
    subject = f"notebook {names} has" if len(notebooks) == 1 else f"notebooks {names} have"
    return UserError(
        f"{source}: {subject} no parameter '{key}'"
        + (f" (did you mean '{hint}'?)" if hint else "")
        + f"; valid parameters: {', '.join(declared)}"
    )


def variant(profile: dict[str, Any], name: Any, profile_name: str) -> dict[str, Any]:
    """The profile's variant NAME ({'all': ..., 'notebooks': ...}); an error naming the variants when it has no such one."""
    variants = profile.get("variants") or {}
    if str(name) in variants:
        return variants[str(name)]
    if not variants:
        raise UserError(f"{VARIANT}={name}: profile '{profile_name}' declares no variants; name rows of settings under "
                        "'variants:' in its file (see notebooks/profiles/paper_a.paper.yaml)")
    hint = closest(str(name), sorted(variants))
    raise UserError(f"{VARIANT}={name}: profile '{profile_name}' has no variant '{name}'"
                    + (f" (did you mean '{hint}'?)" if hint else "") + f"; its variants: {', '.join(variants)}")


def touches(profile: dict[str, Any], name: Any, notebook: Notebook) -> bool:
    """Whether the profile's variant NAME sets some parameter of the notebook."""
    row = profile.get("variants", {}).get(str(name), {})
    own = row.get("notebooks", {}).get(notebook.name, {})
    return bool(own) or any(key in notebook.defaults for key in row.get("all", {}))


def _check_keys(by_name: dict[str, Notebook], shared: dict[str, Any], per_notebook: dict[str, dict[str, Any]],
                source: str) -> None:
    """Every notebook named exists and declares its keys; every shared key is declared by some notebook."""
    for name, values in per_notebook.items():
        if name not in by_name:
            hint = closest(name, sorted(by_name))
            raise UserError(f"{source} names notebook '{name}', which does not exist"
                            + (f" (did you mean '{hint}'?)" if hint else ""))
        for key in values:
            if key not in by_name[name].defaults:
                raise _unknown_key([by_name[name]], key, source)
    for key in shared:
        if not any(key in nb.defaults for nb in by_name.values()):
            raise _unknown_key(list(by_name.values()), key, f"{source} (all)")


def resolve(notebooks: list[Notebook], selected: list[Notebook], profile: dict[str, Any],
            sets: dict[str, Any], profile_name: str) -> dict[str, dict[str, Any]]:
    """Resolved parameters of each selected notebook: defaults < profile 'all' < profile notebook < the variant's
    'all' < the variant's notebook < --set (`variant` in sets names one of the profile's variants).

    Every profile and variant key and every --set key is checked against the notebooks' parameters cells first: an
    'all' key must be declared by some notebook of the project (it then goes only to those that declare it), a --set
    key by some selected notebook.
    """
    by_name = {nb.name: nb for nb in notebooks}
    _check_keys(by_name, profile["all"], profile["notebooks"], f"profile '{profile_name}'")
    for name, row in profile.get("variants", {}).items():
        _check_keys(by_name, row["all"], row["notebooks"], f"profile '{profile_name}' variant '{name}'")
    row = variant(profile, sets[VARIANT], profile_name) if VARIANT in sets else {"all": {}, "notebooks": {}}
    sets = {key: value for key, value in sets.items() if key != VARIANT}
    for key in sets:
        if not any(key in nb.defaults for nb in selected):
            raise _unknown_key(selected, key, "--set")
    resolved = {}
    for nb in selected:
        params = dict(nb.defaults)
        for shared, per_notebook in ((profile["all"], profile["notebooks"]), (row["all"], row["notebooks"])):
            params.update({k: v for k, v in shared.items() if k in nb.defaults})
            params.update(per_notebook.get(nb.name, {}))
        params.update({k: v for k, v in sets.items() if k in nb.defaults})
        resolved[nb.name] = params
    return resolved


def origin(profile: dict[str, Any], sets: dict[str, Any], profile_name: str,
           point: dict[str, Any] | None = None) -> Callable[[str, str], str]:
    """A function telling where a notebook's resolved parameter came from: --set, --sweep, a variant, the profile, or
    its default (point: the grid point's values)."""
    point = point or {}
    chosen = {**sets, **point}.get(VARIANT)
    row = profile.get("variants", {}).get(str(chosen), {}) if chosen is not None else {}

    def where(notebook: str, key: str) -> str:
        """'from --set', 'from --sweep', "from variant 'V' of profile 'NAME'", "from profile 'NAME'" or "the notebook's default"."""
        if key in sets:
            return "from --set"
        if key in point:
            return "from --sweep"
        if key in row.get("notebooks", {}).get(notebook, {}) or key in row.get("all", {}):
            return f"from variant '{chosen}' of profile '{profile_name}'"
        if key in profile["notebooks"].get(notebook, {}) or key in profile["all"]:
            return f"from profile '{profile_name}'"
        return "the notebook's default"
    return where
