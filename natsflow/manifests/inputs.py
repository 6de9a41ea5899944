"""A manifest's ``input`` JSON Schema: checked at deploy, applied to every start's input.

Pure (``jsonschema`` validates in memory): nothing is ever fetched. A schema is
written in Draft 2020-12 unless its ``$schema`` names another dialect
jsonschema knows (drafts 3, 4, 6, 7, 2019-09). ``$ref`` may point only within
the schema itself, by JSON pointer or anchor (``#/$defs/money``, ``#money``);
any other reference (``https://...``, ``other.json#/x``) is refused at deploy,
and the validators are built over a registry that cannot retrieve anything, so
no network is touched while validating.

>>> schema = {"type": "object", "required": ["name"],
...           "properties": {"name": {"type": "string"}}}
>>> check_input_schema(schema)
[]
>>> InputSchema(schema).problems({"name": 7})
["input.name: 7 is not of type 'string'"]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

__all__ = ["MAX_PROBLEMS", "InputSchema", "check_input_schema", "render_path"]

MAX_PROBLEMS = 50
"""Problems listed for one input at most; the rest are counted (a reply stays small)."""

_MAX_MESSAGE = 240
_DEFAULT: type[Validator] = jsonschema.Draft202012Validator
_DEFAULT_URI = "https://json-schema.org/draft/2020-12/schema"
_DIALECTS: dict[str, type[Validator]] = {
    str(cls.ID_OF(cls.META_SCHEMA) or "").rstrip("#"): cls
    for cls in (
        jsonschema.Draft3Validator,
        jsonschema.Draft4Validator,
        jsonschema.Draft6Validator,
        jsonschema.Draft7Validator,
        jsonschema.Draft201909Validator,
        jsonschema.Draft202012Validator,
    )
}
# Keywords whose values are data, not subschemas: a "$ref" key inside is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")

# No retrieval: a reference outside the schema (and the dialects' own meta-schemas,
# which jsonschema adds) cannot be resolved, instead of being fetched over the network.
_OFFLINE: referencing.Registry[Any] = referencing.Registry()


def render_path(root: str, parts: Iterable[str | int]) -> str:
    """``input.items[2].sku``: keys after dots, indices in brackets; an odd key is quoted."""
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}"
        else:
            out += "[" + _quote(part) + "]"
    return out


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _short(message: str) -> str:
    """jsonschema quotes the whole offending value: keep a problem on one readable line."""
    one_line = " ".join(message.split())
    return one_line if len(one_line) <= _MAX_MESSAGE else one_line[: _MAX_MESSAGE - 3] + "..."


def _sort_key(error: ValidationError) -> tuple[tuple[tuple[int, Any], ...], str]:
    # Indices sort as numbers and before keys at the same depth, so [2] comes before [10].
    parts = tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in error.absolute_path)
    return parts, error.message


def _listed(errors: list[ValidationError], root: str) -> list[str]:
    """Every error as ``path: message``, sorted by path, at most MAX_PROBLEMS of them."""
    errors.sort(key=_sort_key)
    lines = list(
        dict.fromkeys(f"{render_path(root, e.absolute_path)}: {_short(e.message)}" for e in errors)
    )
    if len(lines) > MAX_PROBLEMS:
        more = len(lines) - MAX_PROBLEMS
        lines = [*lines[:MAX_PROBLEMS], f"{root}: ... and {more} more problem(s)"]
    return lines


def _dialect(schema: dict[str, Any], path: str) -> tuple[type[Validator] | None, list[str]]:
    """The validator class for ``schema`` (its ``$schema``, else Draft 2020-12)."""
    named = schema.get("$schema")
    if named is None:
        return _DEFAULT, []
    if not isinstance(named, str) or named.rstrip("#") not in _DIALECTS:
        known = ", ".join(_DIALECTS)
        return None, [f"{path}.$schema: unknown dialect {named!r} (expected one of: {known})"]
    return jsonschema.validators.validator_for(schema, default=_DEFAULT), []


def check_input_schema(schema: Any, path: str = "input") -> list[str]:
    """Every problem of a manifest's ``input`` schema, each as ``path: reason``.

    The schema is checked against its dialect's meta-schema (what jsonschema's
    ``check_schema`` does, listing every error instead of the best one), and its
    references must stay within it and resolve.
    """
    if not isinstance(schema, dict):
        return [f"{path}: expected a JSON Schema object, got {schema!r}"]
    cls, problems = _dialect(schema, path)
    if cls is None:
        return problems
    meta = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER, registry=_OFFLINE)
    problems = _listed(list(meta.iter_errors(schema)), path)
    # Where references point is checked either way; whether they resolve, in a valid schema.
    return problems + _check_refs(schema, path, resolve=not problems)


def _check_refs(schema: dict[str, Any], path: str, *, resolve: bool) -> list[str]:
    """Refuse references outside the schema; with ``resolve``, resolve the root's own now."""
    root = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")).rstrip("#") or _DEFAULT_URI,
        default=referencing.jsonschema.DRAFT202012,
    ).create_resource(schema)
    resolver = _OFFLINE.resolver_with_root(root)
    problems = []
    for site, ref, nested in _refs(schema, [], nested=False):
        where = render_path(path, site)
        if not ref.startswith("#"):
            problems.append(
                f"{where}: reference {ref!r} leaves the schema (only local references like"
                " '#/$defs/name' are allowed: natsflow fetches nothing)"
            )
        elif resolve and not nested:
            # Under a nested $id, '#...' is relative to that subschema: checked when used.
            try:
                resolver.lookup(ref)
            except referencing.exceptions.Unresolvable:
                problems.append(f"{where}: reference {ref!r} points to nothing in the schema")
    return problems


def _refs(
    node: Any, site: list[str | int], *, nested: bool
) -> Iterator[tuple[list[str | int], str, bool]]:
    """Every reference keyword in a schema: (path to it, reference, under a nested $id)."""
    if isinstance(node, dict):
        if site and isinstance(node.get("$id", node.get("id")), str):
            nested = True
        for key, value in node.items():
            if key in _REF_KEYWORDS and isinstance(value, str):
                yield [*site, key], value, nested
            elif key not in _DATA_KEYWORDS:
                yield from _refs(value, [*site, key], nested=nested)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _refs(item, [*site, i], nested=nested)


class InputSchema:
    """A workflow version's input schema, compiled once and applied to each start's input.

    The schema must have passed ``check_input_schema`` (it did at deploy).
    Formats are asserted, not just annotations, for the formats jsonschema can
    check with what is installed (date, email, ipv4, ipv6, regex, uuid, ...).
    """

    def __init__(self, schema: dict[str, Any], root: str = "input") -> None:
        cls, _ = _dialect(schema, "input")
        cls = cls or _DEFAULT
        self.schema = schema
        self.root = root  # what problems' paths start with
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER, registry=_OFFLINE)

    def problems(
        self, instance: Any, keep: Callable[[ValidationError], bool] | None = None
    ) -> list[str]:
        """Every way ``instance`` breaks the schema, as ``input.path: reason``, by path
        (``root`` instead of ``input``); ``keep`` picks the errors that count."""
        try:
            errors = list(self._validator.iter_errors(instance))
        except referencing.exceptions.Unresolvable as exc:
            root = self.root
            return [f"{root}: the {root} schema has a reference that cannot be resolved ({exc})"]
        return _listed([e for e in errors if keep is None or keep(e)], self.root)
