"""The service's configuration: defaults, then environment variables, then CLI flags.

``load_config(os.environ, workers=args.workers, ...)`` builds a ``Config``; a bad
value raises ``InputError`` naming the variable (or field) and the value.
An empty environment variable counts as unset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from natsflow.events.errors import InputError

__all__ = ["DEFAULT_NATS_CONFIG", "DURABILITY_MODES", "ENV_VARS", "Config", "load_config"]


def _repo_nats_conf() -> str | None:
    # natsflow/service/config.py -> the repository root, beside natsflow/.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "nats.conf")
    path = os.path.normpath(path)
    return path if os.path.isfile(path) else None


DEFAULT_NATS_CONFIG: str | None = _repo_nats_conf()
"""The repository's ``nats.conf`` if it exists (a source checkout), else None."""

DURABILITY_MODES = ("fsync", "replicated", "relaxed")
"""``fsync``: every acknowledged write is on disk; ``replicated``: R3 streams on a
cluster; ``relaxed``: nats-server's lazy default (a power failure can lose writes)."""


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a natsflow process needs to know at start-up."""

    nats_url: str | None = None
    """NATS server or cluster URL(s), comma separated; None starts an embedded server."""

    data_dir: str = "./data"
    """Local state: the embedded server's JetStream store (``nats/``) and its log."""

    nats_port: int = 4222
    """Client port of the embedded nats-server (ignored with ``nats_url``)."""

    nats_config: str | None = DEFAULT_NATS_CONFIG
    """Extra config file for the embedded nats-server, included after natsflow's own."""

    durability: str = "fsync"
    """What an acknowledged write survives: one of ``DURABILITY_MODES``."""

    http_host: str = "127.0.0.1"
    """Address the HTTP sidecar binds to; loopback unless deliberately exposed."""

    http_port: int = 8080
    """Port of the HTTP sidecar (health, metrics, JSON API); 0 disables HTTP."""

    workers: int = 4
    """Step tasks this process runs concurrently; 0 runs no in-process workers."""

    takeover_after: float = 5.0
    """Seconds after which another instance takes over the messages of one that died
    (the consumers' ack wait; live instances send in-progress acks for longer work)."""

    drain_grace: float = 30.0
    """Seconds steps in flight get to finish after SIGTERM before they are stopped."""

    cancel_grace: float = 5.0
    """Seconds a stopped shell step's processes get between SIGTERM and SIGKILL
    (a cancelled execution, a timeout, a drain)."""

    actor_idle_timeout: float = 30.0
    """Seconds an execution actor stays in memory without messages before passivation."""

    retention_every: float = 60.0
    """Seconds between retention sweeps (one instance at a time does each: ``actors.retention``)."""

    max_active_actors: int = 10000
    """Most execution actors held in memory; the least recently used are passivated."""

    snapshot_every: int = 100
    """Write a state snapshot (and roll up the history) after this many events."""

    archive: bool = False
    """Keep every event in the stream NATSFLOW_ARCHIVE too, so compaction loses no history."""

    archive_max_age_days: float = 30
    """How long archived histories are kept, in days."""

    feed: bool = True
    """Publish every stored event as JSON on ``natsflow.feed.<workflow>.<execution>.<type>``
    (core NATS; ``natsflow watch`` is nudged by it)."""

    python_modules: tuple[str, ...] = ()
    """Modules imported at start-up whose ``register(registry)`` adds ``python`` callables."""

    deploy_paths: tuple[str, ...] = ()
    """Manifest files or directories deployed at start-up."""


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


@dataclass(frozen=True)
class _Kind:
    """How one field is parsed from text and checked as a typed value."""

    expected: str
    parse: Callable[[str], object]
    check: Callable[[object], object]


def _int_kind(lo: int, hi: int | None = None) -> _Kind:
    expected = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        if value < lo or (hi is not None and value > hi):
            raise ValueError
        return value

    return _Kind(expected, lambda text: check(int(text.strip())), check)


def _float_kind(*, positive: bool) -> _Kind:
    expected = "a number > 0" if positive else "a number >= 0"

    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError
        if number < 0 or (positive and number == 0):
            raise ValueError
        return number

    return _Kind(expected, lambda text: check(float(text.strip())), check)


def _check_str(value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value


def _check_optional_str(value: object) -> object:
    return None if value is None or value == "" else _check_str(value)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(text: str) -> object:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError


def _check_bool(value: object) -> object:
    if not isinstance(value, bool):
        raise ValueError
    return value


def _parse_list(text: str) -> object:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _check_list(value: object) -> object:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError
    if not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError
    return tuple(value)


def _choice_kind(choices: tuple[str, ...]) -> _Kind:
    expected = "one of " + ", ".join(choices)

    def check(value: object) -> object:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError
        return value.strip().lower()

    return _Kind(expected, check, check)


_STR = _Kind("a non-empty string", _check_str, _check_str)
_OPTIONAL_STR = _Kind("a string", _check_optional_str, _check_optional_str)
_BOOL = _Kind("1/true/yes/on or 0/false/no/off", _parse_bool, _check_bool)
_LIST = _Kind("a comma separated list of names", _parse_list, _check_list)

_FIELDS: dict[str, _Kind] = {
    "nats_url": _OPTIONAL_STR,
    "data_dir": _STR,
    "nats_port": _int_kind(1, 65535),
    "nats_config": _OPTIONAL_STR,
    "http_host": _STR,
    "http_port": _int_kind(0, 65535),
    "workers": _int_kind(0),
    "durability": _choice_kind(DURABILITY_MODES),
    "takeover_after": _float_kind(positive=True),
    "drain_grace": _float_kind(positive=True),
    "cancel_grace": _float_kind(positive=True),
    "actor_idle_timeout": _float_kind(positive=True),
    "max_active_actors": _int_kind(1),
    "retention_every": _float_kind(positive=True),
    "snapshot_every": _int_kind(1),
    "archive": _BOOL,
    "feed": _BOOL,
    "archive_max_age_days": _float_kind(positive=True),
    "python_modules": _LIST,
    "deploy_paths": _LIST,
}

ENV_VARS: dict[str, str] = {
    "NATS_URL": "nats_url",
    "NATSFLOW_DATA_DIR": "data_dir",
    "NATSFLOW_NATS_PORT": "nats_port",
    "NATSFLOW_NATS_CONFIG": "nats_config",
    "NATSFLOW_HTTP_HOST": "http_host",
    "NATSFLOW_HTTP_PORT": "http_port",
    "NATSFLOW_WORKERS": "workers",
    "NATSFLOW_DURABILITY": "durability",
    "NATSFLOW_TAKEOVER_AFTER": "takeover_after",
    "NATSFLOW_DRAIN_GRACE": "drain_grace",
    "NATSFLOW_CANCEL_GRACE": "cancel_grace",
    "NATSFLOW_ACTOR_IDLE_TIMEOUT": "actor_idle_timeout",
    "NATSFLOW_MAX_ACTIVE_ACTORS": "max_active_actors",
    "NATSFLOW_RETENTION_EVERY": "retention_every",
    "NATSFLOW_SNAPSHOT_EVERY": "snapshot_every",
    "NATSFLOW_ARCHIVE": "archive",
    "NATSFLOW_FEED": "feed",
    "NATSFLOW_ARCHIVE_MAX_AGE_DAYS": "archive_max_age_days",
    "NATSFLOW_PYTHON_MODULES": "python_modules",
    "NATSFLOW_DEPLOY_PATHS": "deploy_paths",
}
"""Environment variable -> Config field it sets."""


def load_config(env: Mapping[str, str], **overrides: Any) -> Config:
    """Build a Config from defaults, then ``env``, then ``overrides`` (None ignored).

    ``overrides`` are Config field names (CLI flags); an unknown name is a TypeError.
    A bad value raises InputError naming the variable or field and the value.
    """
    values: dict[str, object] = {}
    for var, field in ENV_VARS.items():
        text = env.get(var)
        if text is None or not text.strip():
            continue
        kind = _FIELDS[field]
        try:
            values[field] = kind.parse(text)
        except ValueError:
            raise InputError(f"{var}: expected {kind.expected}, got {_show(text)}") from None
    for field, value in overrides.items():
        if field not in _FIELDS:
            raise TypeError(f"load_config: unknown setting {field!r}")
        if value is None:
            continue
        kind = _FIELDS[field]
        try:
            values[field] = kind.check(value)
        except ValueError:
            raise InputError(f"{field}: expected {kind.expected}, got {_show(value)}") from None
    config = msgspec.convert(values, Config)
    if config.durability == "replicated" and config.nats_url is None:
        raise InputError(
            'NATSFLOW_DURABILITY: "replicated" needs a NATS cluster of 3 or more servers '
            "(set NATS_URL); the embedded nats-server is a single node"
        )
    return config
