"""A notebook parameter's type, from its annotation (`k_values: list[int] = [...]`) or else its default."""

from __future__ import annotations

import ast
from typing import Any

SCALARS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                        "list": (list,), "tuple": (list, tuple), "dict": (dict,)}


def annotation_of(default: Any, annotation: str | None) -> str | None:
    """The type a parameter accepts, as annotation text; None when nothing can be said (no annotation, None default)."""
    if annotation:
        return annotation
    if default is None:
        return None
    if isinstance(default, list):
        kinds = {annotation_of(item, None) for item in default}
        return f"list[{kinds.pop()}]" if len(kinds) == 1 and None not in kinds else "list"
    name = type(default).__name__
    return name if name in SCALARS else None


def _matches(value: Any, node: ast.expr) -> bool:
    """Whether a value fits a type expression; parts we cannot read (custom classes) accept anything."""
    if isinstance(node, ast.Constant):
        return value is None if node.value is None else value == node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _matches(value, node.left) or _matches(value, node.right)
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    if name is not None:
        if name == "None":
            return value is None
        kinds = SCALARS.get(name)
        return kinds is None or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds))
    if not isinstance(node, ast.Subscript):
        return True
    base = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if base in ("Optional", "Union", "Literal"):
        return (base == "Optional" and value is None) or any(_matches(value, arg) for arg in args)
    if base in ("list", "tuple", "List", "Tuple", "Sequence"):
        item = args[0]
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if base in ("dict", "Dict", "Mapping") and len(args) == 2:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return True


def fits(value: Any, default: Any, annotation: str | None) -> tuple[bool, str | None]:
    """(whether value has the parameter's type, that type as text); a None default also accepts None."""
    expected = annotation_of(default, annotation)
    if expected is None or (value is None and default is None):
        return True, expected
    try:
        node = ast.parse(expected, mode="eval").body
    except SyntaxError:
        return True, expected
    return _matches(value, node), expected
