"""Manifest validation: every problem, each as ``path: reason``, reported at once.

Validation runs in two passes over the decoded document (plain dicts and
lists). The structural pass walks the schema in ``manifests.schema`` field by
field, converting durations to seconds and each leaf with ``msgspec.convert``;
the semantic pass checks what types cannot say: step references, cycles,
actions and their ``with`` keys, templates. Problems from both passes are
raised together in one ``ManifestError``.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

import msgspec
import msgspec.inspect as mi

from natsflow.events.errors import ManifestError
from natsflow.manifests.checks import check_semantics, join, show
from natsflow.manifests.durations import DURATION_HINT, parse_duration
from natsflow.manifests.schema import PositiveSeconds, Seconds, Workflow

__all__ = ["check_struct", "check_value", "validate_document"]

Problems = list[str]

# --- the structural pass -----------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(tp, False)``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _describe(info: mi.Type) -> str:
    """``int >= 1 and <= 1000``, ``list of str``, ``one of "fixed", "exponential"``..."""
    bounds = [
        f"{symbol} {limit}"
        for symbol, name in ((">", "gt"), (">=", "ge"), ("<", "lt"), ("<=", "le"))
        if (limit := getattr(info, name, None)) is not None
    ]
    bound = f" {' and '.join(bounds)}" if bounds else ""
    match info:
        case mi.IntType():
            return "int" + bound
        case mi.FloatType():
            return "number" + bound
        case mi.StrType(pattern=pattern):
            return "str" + (f" matching {pattern}" if pattern else "")
        case mi.BoolType():
            return "bool"
        case mi.NoneType():
            return "null"
        case mi.LiteralType(values=values):
            return "one of " + ", ".join(show(v) for v in values)
        case mi.VarTupleType(item_type=item) | mi.ListType(item_type=item):
            return f"list of {_describe(item)}"
        case mi.DictType(value_type=mi.AnyType()) | mi.StructType():
            return "mapping"
        case mi.DictType(value_type=item):
            return f"mapping of str to {_describe(item)}"
        case mi.UnionType(types=members):
            return " or ".join(_describe(m) for m in members)
        case mi.AnyType():
            return "any value"
    return type(info).__name__  # pragma: no cover - schema uses only the types above


def check_value(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    """Check ``value`` against schema type ``tp``; return it normalized (durations in seconds)."""
    inner, optional = _strip_optional(tp)
    if optional and value is None:
        return None
    if inner in (Seconds, PositiveSeconds):
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError:
                problems.append(f"{path}: invalid duration {show(value)} ({DURATION_HINT})")
                return value
        return _leaf(inner, value, path, problems, prefix="duration")
    if _is_struct(inner):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {show(value)}")
            return value
        return check_struct(inner, value, path, problems)
    origin, args = get_origin(inner), get_args(inner)
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: expected {_describe(mi.type_info(inner))}, got {show(value)}")
            return value
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{join(path, key)}: keys must be strings, got {show(key)}")
            out[key] = check_value(args[1], item, join(path, key), problems)
        return out
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list | tuple):
            problems.append(f"{path}: expected {_describe(mi.type_info(inner))}, got {show(value)}")
            return value
        return [check_value(args[0], v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return _leaf(inner, value, path, problems)


def _leaf(tp: Any, value: Any, path: str, problems: Problems, prefix: str = "") -> Any:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError:
        if get_origin(tp) is Literal:
            expected = "one of " + ", ".join(show(v) for v in get_args(tp))
        else:
            expected = _describe(mi.type_info(tp))
        if prefix:
            expected = prefix + expected.removeprefix("number")
        problems.append(f"{path}: expected {expected}, got {show(value)}")
        return value


def check_struct(
    cls: type[msgspec.Struct], value: dict[Any, Any], path: str, problems: Problems
) -> dict[Any, Any]:
    """Check a mapping against a Struct: unknown, missing and ill-typed fields."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    out: dict[Any, Any] = {}
    for key, item in value.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            expected = ", ".join(fields)
            problems.append(f"{join(path, key)}: unknown field (expected one of: {expected})")
            continue
        out[key] = check_value(field.type, item, join(path, key), problems)
    problems.extend(
        f"{join(path, name)}: required field missing"
        for name, field in fields.items()
        if field.required and name not in value
    )
    return out


# --- entry point -------------------------------------------------------------


def validate_document(doc: Any, source: str = "<manifest>") -> Workflow:
    """Validate a decoded manifest document and return the typed Workflow.

    Raises ManifestError listing every problem found, each as ``path: reason``.
    """
    problems: Problems = []
    if doc is None:
        raise ManifestError(source, ["(top level): the document is empty"])
    if not isinstance(doc, dict):
        raise ManifestError(
            source, [f"(top level): expected a mapping (name, steps, ...), got {show(doc)}"]
        )
    normalized = check_struct(Workflow, doc, "", problems)
    check_semantics(normalized, problems)
    if problems:
        raise ManifestError(source, list(dict.fromkeys(problems)))
    try:
        return msgspec.convert(normalized, Workflow)
    except msgspec.ValidationError as exc:  # pragma: no cover - the passes above cover it
        raise ManifestError(source, [f"(top level): {exc}"]) from None
