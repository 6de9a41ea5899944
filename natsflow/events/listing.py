"""What ``ls`` and ``stats`` ask of the execution index, in pure terms.

``ExecutionFilter`` is one query (every bound absolute); ``Cursor`` is where a
page ended, passed back opaque (``encode_cursor`` / ``decode_cursor``);
``parse_time`` reads the ``--since`` / ``--until`` forms: ``1h`` ago, an
RFC 3339 time or date, or Unix seconds. The clock is the caller's.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Literal

import msgspec

from natsflow.events.model import ExecutionStatus

EXPIRED = "expired"
"""The status of an index row whose summary was deleted (retention): a tombstone."""

TIME_HINT = "expected a duration ago (30s, 15m, 2h, 7d), an RFC 3339 time or date, or Unix seconds"
_AGO = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class TimeBound:
    """A ``--since`` / ``--until``: ``value`` seconds ago, or the Unix time ``value``."""

    kind: Literal["ago", "at"]
    value: float

    def resolve(self, now: float) -> float:
        return now - self.value if self.kind == "ago" else self.value


def parse_time(field: str, text: str) -> TimeBound:
    """``text`` as a time bound; ``ValueError`` naming ``field`` and the value otherwise."""
    text = text.strip()
    if match := _AGO.match(text):
        return TimeBound("ago", float(match[1]) * _UNIT[match[2]])
    try:
        at = float(text)
    except ValueError:
        pass
    else:  # float() also reads nan and inf, which no start time compares with
        if math.isfinite(at):
            return TimeBound("at", at)
        raise ValueError(f"{field}: {TIME_HINT}, got {text!r}")
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: {TIME_HINT}, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return TimeBound("at", when.timestamp())


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a page ended: the last row's start time and id (newest first)."""

    started_at: float
    execution_id: str


_cursor_decoder = msgspec.json.Decoder(Cursor)


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """The cursor a page returned; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _cursor_decoder.decode(raw)
    except (ValueError, msgspec.DecodeError):
        raise ValueError(f"after: not a cursor returned by ls, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """One ``ls`` / ``stats`` query: every given field must match (times are absolute)."""

    status: ExecutionStatus | Literal["expired"] | None = None
    workflow: str | None = None
    since: float | None = None  # started at or after
    until: float | None = None  # started before
    error: str | None = None  # a substring of the error message
    parent: str | None = None
    after: Cursor | None = None
    limit: int = 100
