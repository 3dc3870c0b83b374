"""Checks on every parameter value before any notebook starts: one line naming the parameter, the value and the fix.

The checks are a table from parameter name (or name pattern) to a check, so a new notebook parameter with a
known name is checked as soon as a notebook declares it; any other name gets the type check only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import lru_cache
from typing import Any

from companion.core.errors import UserError
from companion.core.precision import AUTO, PRECISIONS
from companion.publish import profiles
from companion.publish.model_checks import dataset_problem, model_problem, model_shape
from companion.publish.param_types import fits
from companion.steering.settings import CHOICES, CONTROLS


@dataclass(frozen=True)
class Context:
    """One notebook's resolved parameters, its defaults and where each value came from (for the messages)."""

    notebook: profiles.Notebook
    params: dict[str, Any]
    origin: Callable[[str, str], str]  # (notebook name, parameter) -> "from --set", "from profile 'smoke'", ...

    def subject(self, name: str) -> str:
        """'notebook: parameter=value (where the value came from)'."""
        return f"{self.notebook.name}: {name}={self.params[name]!r} ({self.origin(self.notebook.name, name)})"

    def refuse(self, name: str, problem: str, fix: str) -> UserError:
        """The one-line error for a parameter: notebook, parameter=value (origin), problem; fix."""
        return UserError(f"{self.subject(name)} {problem}; {fix}")

    def wrap(self, name: str, error: UserError) -> UserError:
        """A check's own one-line error (it names the problem and the fix), prefixed with the parameter's subject."""
        return UserError(f"{self.subject(name)}: {error}")


Check = Callable[[Context, str], None]


def _type(ctx: Context, name: str) -> None:
    """The value has the type of the parameter's annotation (or of its default)."""
    value, default = ctx.params[name], ctx.notebook.defaults.get(name)
    ok, expected = fits(value, default, ctx.notebook.annotations.get(name))
    if not ok:
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) and _is_number(value) else ""
        raise ctx.refuse(name, f"is not {expected}{hint}", f"pass a value like {name}={default!r}")


def _is_number(text: str) -> bool:
    """Whether text reads as a number."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def at_least(low: float, strict: bool = False) -> Check:
    """A check that a number (or each number of a list) is >= low (> low when strict)."""
    def check(ctx: Context, name: str) -> None:
        """Numbers at or above the bound."""
        value = ctx.params[name]
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise ctx.refuse(name, "is empty", f"give at least one value, e.g. {name}={ctx.notebook.defaults.get(name)!r}")
        bad = [v for v in values if isinstance(v, (int, float)) and (v <= low if strict else v < low)]
        if bad:
            bound = f"{'>' if strict else '>='} {low:g}"
            raise ctx.refuse(name, f"must be {bound}", f"pass a value like {ctx.notebook.defaults.get(name)!r}")
    return check


def one_of(choices: Callable[[], tuple[str, ...]]) -> Check:
    """A check that a value (or each value of a list) is one of the choices (read when first needed)."""
    def check(ctx: Context, name: str) -> None:
        """Values among the choices."""
        value = ctx.params[name]
        allowed = choices()
        if any(v not in allowed for v in (value if isinstance(value, list) else [value])):
            raise ctx.refuse(name, "is not allowed", f"use {' or '.join(map(repr, allowed))}")
    return check


def _fraction(ctx: Context, name: str) -> None:
    """A share strictly between 0 and 1."""
    if not 0 < ctx.params[name] < 1:
        raise ctx.refuse(name, "must lie strictly between 0 and 1", "pass e.g. 0.25")


def _regex(ctx: Context, name: str) -> None:
    """A valid regular expression (or None for the default)."""
    if ctx.params[name] is not None:
        try:
            re.compile(ctx.params[name])
        except re.error as exc:
            raise ctx.refuse(name, f"is not a regular expression ({exc})", "escape special characters or pass null") from exc


def _dtype(ctx: Context, name: str) -> None:
    """A torch floating-point dtype paper A's settings accept (checked by name: the runner never loads torch)."""
    if ctx.params[name] not in (AUTO, *CHOICES["dtype"]):
        raise ctx.refuse(name, "is not a torch floating-point dtype", "use auto, float32, bfloat16 or float16")


def _model(ctx: Context, name: str) -> None:
    """An embedded model, a saved folder, or a hub id available here."""
    listed = isinstance(ctx.params[name], list)
    for value in ctx.params[name] if listed else [ctx.params[name]]:
        problem = model_problem(value)
        if problem:
            raise ctx.refuse(name, f"names {value!r}, which {problem[0]}" if listed else problem[0], problem[1])


def _dataset(ctx: Context, name: str) -> None:
    """A hub dataset id available here ('' or 'bible' where those mean the embedded data)."""
    value = ctx.params[name]
    if value in ("", "bible", "file"):
        if value == "file" and not ctx.params.get("parallel_path"):
            raise ctx.refuse(name, "needs a file", "also pass parallel_path=<your .tsv or .jsonl>")
        return
    problem = dataset_problem(value)
    if problem:
        raise ctx.refuse(name, problem[0], problem[1])


def _languages(ctx: Context, name: str) -> None:
    """Codes the corpus (or the user's parallel file) has; two at least where experts are found by contrast."""
    from companion.core.corpora import FLORES_CODES, check_languages

    codes, path, corpus = ctx.params[name], ctx.params.get("parallel_path"), ctx.params.get("corpus", "bible")
    try:
        if path:
            columns = _parallel_file(path).columns
            missing = [code for code in codes if code not in columns]
            if missing:
                raise UserError(f"parallel file {path} has no column for {missing}; its columns are {list(columns)}")
        elif corpus == "bible":
            check_languages(codes)
        elif any(code not in FLORES_CODES for code in codes):
            raise UserError(f"{corpus} has no code for {[c for c in codes if c not in FLORES_CODES]}; "
                            f"known: {', '.join(sorted(FLORES_CODES))}")
    except UserError as exc:
        raise ctx.wrap(name, exc) from None
    if "n_find" in ctx.params and len(set(codes)) < 2:
        raise ctx.refuse(name, "has fewer than two languages, but experts are found by contrasting languages",
                         "pass two or more, e.g. languages=[en,de]")


def _in_languages(ctx: Context, name: str) -> None:
    """A language that is among the notebook's languages."""
    if ctx.params[name] not in ctx.params.get("languages", [ctx.params[name]]):
        raise ctx.refuse(name, f"is not one of languages={ctx.params['languages']}", "add it to languages or pick one of them")


def _in_sets(ctx: Context, name: str) -> None:
    """Test sets (paper B's primary OOD list) that are among the notebook's sets, unless own data replaces them."""
    if ctx.params.get("preference_path") or ctx.params.get("hub_dataset") or "sets" not in ctx.params:
        return  # the page says own data has no out-of-distribution set, and scores its held-out split only
    missing = [value for value in ctx.params[name] if value not in ctx.params["sets"]]
    if missing:
        raise ctx.refuse(name, f"names {missing}, which are not among sets={ctx.params['sets']}",
                         "add them to sets or drop them from " + name)


@lru_cache(maxsize=8)
def _parallel_file(path: str) -> Any:
    """A user's parallel file, read once per run."""
    from companion.core.corpora import read_parallel_file

    return read_parallel_file(path)


def _parallel_path(ctx: Context, name: str) -> None:
    """A readable TSV/JSONL parallel file (None or '' for the corpus)."""
    if ctx.params[name]:
        try:
            _parallel_file(str(ctx.params[name]))
        except UserError as exc:
            raise ctx.wrap(name, exc) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ctx.refuse(name, f"cannot be read ({exc.__class__.__name__})", "pass a readable TSV or JSONL file") from None


def _preference_path(ctx: Context, name: str) -> None:
    """A readable JSONL preference file with enough pairs to train and test ('' for the embedded sets)."""
    if ctx.params[name]:
        from companion.core.preference_files import read_preference_file
        from companion.rewards.preferences import split_pairs

        try:
            split_pairs(read_preference_file(ctx.params[name]), ctx.params.get("test_fraction", 0.25), 0)
        except UserError as exc:
            raise ctx.wrap(name, exc) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ctx.refuse(name, f"cannot be read ({exc.__class__.__name__})", "pass a readable UTF-8 JSONL file") from None


@lru_cache(maxsize=8)
def _split_sizes(languages: tuple[str, ...], path: str | None) -> dict[str, int]:
    """Rows in each split ('experts', 'eval') of the Bible for these languages, or of the user's file."""
    from companion.core.corpora import SPLITS, bible_corpus, split_of

    frame = _parallel_file(path) if path else bible_corpus(list(languages))
    splits = [split_of(str(key)) for key in frame.index]
    return {split: splits.count(split) for split in SPLITS}


def _split_size(ctx: Context, name: str) -> None:
    """At least one, and no more sentences than the split holds (n_find reads the 'experts' split, n_eval 'eval')."""
    at_least(1)(ctx, name)
    path, corpus = ctx.params.get("parallel_path"), ctx.params.get("corpus", "bible")
    if "languages" not in ctx.params or (not path and corpus != "bible"):  # not a parallel-corpus count, or FLORES+
        return
    available = _split_sizes(tuple(ctx.params["languages"]), str(path) if path else None)["experts" if name == "n_find" else "eval"]
    if ctx.params[name] > available:
        raise ctx.refuse(name, f"is larger than the {available} sentences its split holds", f"pass at most {name}={available}")


def _layers(ctx: Context, name: str) -> None:
    """Layers inside the model (0 .. layers - 1)."""
    shape = model_shape(str(ctx.params.get("model_name", "")))
    values = ctx.params[name] if isinstance(ctx.params[name], list) else [ctx.params[name]]
    if shape and any(not 0 <= v < shape[0] for v in values):
        raise ctx.refuse(name, f"names a layer outside {ctx.params['model_name']} (layers 0..{shape[0] - 1})",
                         f"use layers between 0 and {shape[0] - 1}")
    if name == "projection_layer" and isinstance(ctx.params.get("layers"), list) and ctx.params[name] not in ctx.params["layers"]:
        raise ctx.refuse(name, f"is not among layers={ctx.params['layers']}", "pick one of them or add it to layers")


def _units(ctx: Context, name: str) -> None:
    """At most as many experts as the model has units (known for the default units: every MLP's neurons)."""
    shape = model_shape(str(ctx.params.get("model_name", "")))
    values = ctx.params[name] if isinstance(ctx.params[name], list) else [ctx.params[name]]
    if not values and name != "sweep_k":  # sweep_k=[]: the exploratory sweep runs at the primary k only
        raise ctx.refuse(name, "is empty", f"give at least one value, e.g. {name}={ctx.notebook.defaults.get(name)!r}")
    if any(v < 0 for v in values):
        raise ctx.refuse(name, "is negative", "pass 0 or more experts")
    default_units = not ctx.params.get("units") and ctx.params.get("unit_site", "input") == "input"
    if shape and shape[1] and default_units and max(values, default=0) > shape[0] * shape[1]:
        total = shape[0] * shape[1]
        raise ctx.refuse(name, f"asks for more experts than the {total:,} units of {ctx.params['model_name']}",
                         f"pass at most {total}")


def _steering_choices(field: str) -> Callable[[], tuple[str, ...]]:
    """The choices paper A's settings accept for one field (selection, unit_site, ...)."""
    return lambda: CHOICES[field]


# Checks in the order they run: the model and data first, since later checks read them.
CHECKS: dict[str, Check] = {
    "model_name": _model, "model": _model, "models": _model,
    "corpus": _dataset, "hub_dataset": _dataset,
    "parallel_path": _parallel_path, "preference_path": _preference_path,
    "languages": _languages, "steer_to": _in_languages, "prompt_language": _in_languages, "ood": _in_sets,
    "n_find": _split_size, "n_eval": _split_size,
    "layers": _layers, "projection_layer": _layers, "primary_layer": _layers,
    "k": _units, "k_values": _units, "primary_k": _units, "sweep_k": _units, "sample_k": _units,
    "test_fraction": _fraction, "units": _regex, "dtype": _dtype,
    "pooling": one_of(_steering_choices("pooling")), "controls": one_of(lambda: tuple(CONTROLS)),
    "control": one_of(lambda: tuple(CONTROLS)), "selection": one_of(_steering_choices("selection")),
    "unit_site": one_of(_steering_choices("unit_site")), "pairs_scope": one_of(lambda: ("all", "pivot", "from-pivot", "to-pivot")),
    "positions": one_of(_steering_choices("positions")), "protocol": one_of(_steering_choices("protocol")),
    "precision": one_of(lambda: (AUTO, *PRECISIONS)),
    "seed": at_least(0), "data_seed": at_least(0), "seeds": at_least(0),
    "beta": at_least(0, strict=True), "learning_rate": at_least(0, strict=True),
    "n_*": at_least(1), "threads": at_least(1), "steps": at_least(1), "batch_size": at_least(1), "lora_*": at_least(1),
    "max_*": at_least(1), "*_words": at_least(1),
}


def check_for(name: str) -> Check | None:
    """The table's check for a parameter name: exact, else the first matching pattern, else none."""
    return CHECKS.get(name) or next((check for key, check in CHECKS.items() if "*" in key and fnmatch(name, key)), None)


def _order(name: str) -> int:
    """Position of a parameter's check in the table (unknown names last)."""
    keys = list(CHECKS)
    return next((i for i, key in enumerate(keys) if fnmatch(name, key)), len(keys))


def check(notebooks: list[profiles.Notebook], resolved: dict[str, dict[str, Any]], origin: Callable[[str, str], str]) -> None:
    """Check every parameter of every notebook about to run; the first problem ends in a one-line UserError."""
    for nb in notebooks:
        ctx = Context(nb, resolved[nb.name], origin)
        names = sorted(ctx.params, key=_order)
        for name in names:  # all types first, so value checks can rely on them
            _type(ctx, name)
        for name in names:
            value_check = check_for(name)
            if value_check:
                value_check(ctx, name)
