"""Loading manifests from YAML, TOML or JSON into validated ``Workflow`` structs.

>>> wf = parse_manifest(b"name: hi\\nsteps: {a: {action: noop}}", "yaml")
>>> wf.steps["a"].action, manifest_version(wf) == manifest_version(wf)
('noop', True)
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import orjson
import yaml

from natsflow.events.errors import ManifestError
from natsflow.manifests.durations import format_duration, parse_duration
from natsflow.manifests.schema import Workflow
from natsflow.manifests.validate import validate_document

__all__ = [
    "decode_workflow",
    "encode_workflow",
    "format_duration",
    "load_manifest",
    "manifest_version",
    "parse_duration",
    "parse_manifest",
]

Format = Literal["yaml", "toml", "json"]
FORMATS: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so `on:` stays a key, not True."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def parse_manifest(data: bytes | str, fmt: Format, source: str = "<manifest>") -> Workflow:
    """Decode and validate a manifest written in ``fmt``.

    Raises ManifestError (naming ``source``) listing every problem, including
    a syntax error in the document itself.
    """
    return validate_document(_decode(data, fmt, source), source)


def load_manifest(path: str | os.PathLike[str]) -> Workflow:
    """Read, decode and validate the manifest file at ``path``.

    The format comes from the extension (.yaml, .yml, .toml, .json). Raises
    ManifestError for an unknown extension or an invalid manifest, OSError
    when the file cannot be read.
    """
    file = Path(path)
    fmt = FORMATS.get(file.suffix.lower())
    if fmt is None:
        known = ", ".join(FORMATS)
        raise ManifestError(
            str(file), [f"(file): unknown extension {file.suffix!r} (expected one of: {known})"]
        )
    return parse_manifest(file.read_bytes(), fmt, str(file))


def _decode(data: bytes | str, fmt: Format, source: str) -> Any:
    """Parse the document into plain JSON-compatible values."""
    try:
        match fmt:
            case "json":
                return orjson.loads(data)
            case "toml":
                text = data.decode() if isinstance(data, bytes) else data
                return _plain(tomllib.loads(text), source)
            case "yaml":
                return _plain(
                    yaml.load(data, Loader=_Yaml12Loader), source
                )  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ManifestError(source, [f"(top level): invalid YAML{at}: {exc.problem}"]) from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, orjson.JSONDecodeError) as exc:
        raise ManifestError(source, [f"(top level): invalid {fmt.upper()}: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(source, [f"(top level): not UTF-8 text: {exc}"]) from None
    raise ValueError(f"unknown manifest format {fmt!r} (expected yaml, toml or json)")


def _plain(doc: Any, source: str) -> Any:
    """Turn YAML/TOML extras (dates, non-string keys) into what JSON would give.

    A manifest then validates, hashes and stores the same whichever format
    it was written in.
    """
    try:
        return orjson.loads(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))
    except TypeError as exc:
        raise ManifestError(source, [f"(top level): unsupported value: {exc}"]) from None


def manifest_version(wf: Workflow) -> str:
    """The content hash of a workflow: 12 hex chars of sha256 over its sorted JSON.

    Fields that are null or empty do not count, so a field a newer natsflow adds
    (with such a default) leaves the versions of existing manifests as they were.
    """
    canonical = orjson.dumps(_pruned(msgspec.to_builtins(wf)), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def encode_workflow(wf: Workflow) -> bytes:
    """Encode a validated workflow as JSON for storage."""
    return msgspec.json.encode(wf)


def decode_workflow(data: bytes) -> Workflow:
    """Decode a workflow stored by ``encode_workflow`` (already validated when stored)."""
    return msgspec.json.decode(data, type=Workflow)
