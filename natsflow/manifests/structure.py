"""The structural check: a decoded value against a schema type, every problem by path.

``check_struct(cls, mapping, path, problems)`` walks a msgspec Struct field by
field and appends ``path: reason`` for each unknown, missing or ill-typed
field; nothing raises. Durations (``Seconds``, ``PositiveSeconds``) are parsed
from ``"500ms"``-style strings into seconds, and the normalized mapping is
returned, ready for ``msgspec.convert``. The manifest schema and the action
catalogue's parameter structs are both checked with it, at deploy and at run
time alike.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import msgspec.inspect as mi
import orjson

from natsflow.manifests.durations import DURATION_HINT, parse_duration
from natsflow.manifests.expressions import single_template
from natsflow.manifests.schema import PositiveSeconds, Seconds

__all__ = ["Problems", "check_struct", "check_value", "join", "show"]

Problems = list[str]


def show(value: Any) -> str:
    """A short JSON rendering of a manifest value for a problem message."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def join(path: str, key: object) -> str:
    """``path.key``, or just ``key`` at the top level."""
    return f"{path}.{key}" if path else str(key)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(tp, False)``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _bare(tp: Any) -> Any:
    """``T`` for ``Annotated[T, ...]``, else ``tp``."""
    return get_args(tp)[0] if get_origin(tp) is Annotated else tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _sized(info: mi.Type, noun: str) -> str:
    low, high = getattr(info, "min_length", None), getattr(info, "max_length", None)
    if low == 1 and high is None:
        return f"non-empty {noun}"
    bounds = [f"{s} {n}" for s, n in ((">=", low), ("<=", high)) if n is not None]
    return noun + (f" of length {' and '.join(bounds)}" if bounds else "")


def _describe(info: mi.Type) -> str:
    """``int >= 1 and <= 1000``, ``list of str``, ``one of "fixed", "exponential"``..."""
    bounds = [
        f"{symbol} {limit}"
        for symbol, name in ((">", "gt"), (">=", "ge"), ("<", "lt"), ("<=", "le"))
        if (limit := getattr(info, name, None)) is not None
    ]
    bound = f" {' and '.join(bounds)}" if bounds else ""
    match info:
        case mi.Metadata(type=inner):
            return _describe(inner)
        case mi.IntType():
            return "int" + bound
        case mi.FloatType():
            return "number" + bound
        case mi.StrType(pattern=pattern):
            return _sized(info, "str") + (f" matching {pattern}" if pattern else "")
        case mi.BoolType():
            return "bool"
        case mi.NoneType():
            return "null"
        case mi.LiteralType(values=values):
            return "one of " + ", ".join(show(v) for v in values)
        case mi.VarTupleType(item_type=item) | mi.ListType(item_type=item):
            return _sized(info, f"list of {_describe(item)}")
        case mi.DictType(value_type=mi.AnyType()) | mi.StructType():
            return _sized(info, "mapping")
        case mi.DictType(value_type=item):
            return _sized(info, f"mapping of str to {_describe(item)}")
        case mi.UnionType(types=members):
            return " or ".join(_describe(m) for m in members)
        case mi.AnyType():
            return "any value"
    return type(info).__name__  # pragma: no cover - schemas use only the types above


def _hint(tp: Any) -> str:
    """`` (description)`` from an ``Annotated[T, Meta(description=...)]``, else ``""``."""
    if get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            if isinstance(meta, msgspec.Meta) and meta.description:
                return f" ({meta.description})"
    return ""


def _fail(tp: Any, value: Any, path: str, problems: Problems, prefix: str = "") -> Any:
    if get_origin(tp) is Literal:
        expected = "one of " + ", ".join(show(v) for v in get_args(tp))
    else:
        expected = _describe(mi.type_info(tp))
    if prefix:
        expected = prefix + expected.removeprefix("number")
    problems.append(f"{path}: expected {expected}, got {show(value)}{_hint(tp)}")
    return value


def check_value(
    tp: Any, value: Any, path: str, problems: Problems, *, templates: bool = False
) -> Any:
    """Check ``value`` against schema type ``tp``; return it normalized (durations in seconds).

    With ``templates``, a string that is exactly one template (``"${{ ... }}"``)
    stands for any value, at any depth: it is checked once rendered.
    """
    if templates and isinstance(value, str) and single_template(value) is not None:
        return value
    inner, optional = _strip_optional(tp)
    if optional and value is None:
        return None
    if inner in (Seconds, PositiveSeconds):
        seconds = value
        if isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError:
                problems.append(f"{path}: invalid duration {show(value)} ({DURATION_HINT})")
                return value
        try:
            return msgspec.convert(seconds, inner)
        except msgspec.ValidationError:
            return _fail(inner, value, path, problems, prefix="duration")
    bare = _bare(inner)
    if _is_struct(bare):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {show(value)}")
            return value
        return check_struct(bare, value, path, problems, templates=templates)
    origin, args = get_origin(bare), get_args(bare)
    out: Any
    if origin is dict:
        if not isinstance(value, dict):
            return _fail(inner, value, path, problems)
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{join(path, key)}: keys must be strings, got {show(key)}")
            out[key] = check_value(args[1], item, join(path, key), problems, templates=templates)
    elif origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, list | tuple):
            return _fail(inner, value, path, problems)
        out = [
            check_value(args[0], v, f"{path}[{i}]", problems, templates=templates)
            for i, v in enumerate(value)
        ]
    else:
        return _leaf(inner, value, path, problems)
    # The items are checked; an Annotated container may bound its length as well.
    for meta in get_args(inner)[1:] if bare is not inner else ():
        low, high = getattr(meta, "min_length", None), getattr(meta, "max_length", None)
        if (low is not None and len(out) < low) or (high is not None and len(out) > high):
            return _fail(inner, value, path, problems)
    return out


def _leaf(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return _fail(tp, value, path, problems)


def check_struct(
    cls: type[msgspec.Struct],
    value: dict[Any, Any],
    path: str,
    problems: Problems,
    *,
    templates: bool = False,
) -> dict[Any, Any]:
    """Check a mapping against a Struct: unknown, missing and ill-typed fields."""
    hidden: frozenset[str] = getattr(cls, "NOT_IN_MANIFESTS", frozenset())
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls) if f.name not in hidden}
    out: dict[Any, Any] = {}
    for key, item in value.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            expected = ", ".join(fields)
            problems.append(f"{join(path, key)}: unknown field (expected one of: {expected})")
            continue
        out[key] = check_value(field.type, item, join(path, key), problems, templates=templates)
    problems.extend(
        f"{join(path, name)}: required field missing"
        for name, field in fields.items()
        if field.required and name not in value
    )
    return out
