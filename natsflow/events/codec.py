"""The compact codec for what is stored: event batches and snapshots (msgpack).

One stream message on ``natsflow.ev.<execution>`` is a ``Batch``: the events
one decision appended together, under one compare-and-set. A snapshot lives on
``natsflow.snap.<execution>`` and carries the state schema version it was
written with, so a reader never mis-reads an older layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect

from natsflow.events.errors import NewerEvent, SnapshotSchemaError
from natsflow.events.model import AnyEvent, ExecutionState

# Bump when ExecutionState changes in a way an older snapshot cannot be decoded
# into; add an upcaster from the previous version to UPCASTERS.
STATE_SCHEMA_VERSION = 2


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """The events of one decision, and the inbox message it answered.

    ``cause`` is that message's sequence in the inbox stream (0: not known), so
    that when the message comes again (its ack was lost) the actor re-sends this
    decision's commands, not every command the state has ever needed.
    """

    events: tuple[AnyEvent, ...]
    cause: int = 0


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The state after the event at stream sequence ``covers`` on the execution's subject."""

    schema: int
    covers: int
    state: msgspec.Raw


_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(Batch)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)
_state_decoder = msgspec.msgpack.Decoder(ExecutionState)
_any_decoder = msgspec.msgpack.Decoder(dict[str, Any])
# The tags of every event type this version knows (each event's "type" field).
EVENT_TAGS = frozenset(
    str(msgspec.inspect.type_info(t).tag)  # type: ignore[attr-defined]
    for t in AnyEvent.__args__
)


def encode_batch(events: tuple[AnyEvent, ...], cause: int = 0) -> bytes:
    return _encoder.encode(Batch(events=events, cause=cause))


def decode_batch(data: bytes) -> tuple[AnyEvent, ...]:
    return decode_batch_with_cause(data).events


def decode_batch_with_cause(data: bytes) -> Batch:
    """Decode one stored batch. An event type this version does not know (a newer
    natsflow wrote it, during a rolling upgrade) raises ``NewerEvent``, not a decode
    error: the execution is not broken, only not readable here."""
    try:
        return _batch_decoder.decode(data)
    except msgspec.ValidationError:
        unknown = _unknown_event_types(data)
        if unknown:
            raise NewerEvent(unknown) from None
        raise


def _unknown_event_types(data: bytes) -> list[str]:
    try:
        raw = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return []
    events = raw.get("events")
    if not isinstance(events, list):
        return []
    types = [e.get("type") for e in events if isinstance(e, dict)]
    return [t for t in types if isinstance(t, str) and t not in EVENT_TAGS]


def _upcast_v1(state: dict[str, Any]) -> dict[str, Any]:
    """v1 snapshots named the resume point ``event_count``; v2 calls it ``events``."""
    state = dict(state)
    state["events"] = state.pop("event_count", 0)
    return state


# Upgrades from schema N to N+1, applied in order, on plain msgpack data.
UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upcast_v1}


def encode_snapshot(state: ExecutionState, covers: int) -> bytes:
    raw = msgspec.Raw(_encoder.encode(state))
    return _encoder.encode(Snapshot(schema=STATE_SCHEMA_VERSION, covers=covers, state=raw))


def decode_snapshot(data: bytes, execution: str = "?") -> tuple[ExecutionState, int]:
    """The state and the sequence it covers; upgrades older schemas, refuses unknown ones."""
    snap = _snapshot_decoder.decode(data)
    if snap.schema == STATE_SCHEMA_VERSION:
        return _state_decoder.decode(snap.state), snap.covers
    if snap.schema > STATE_SCHEMA_VERSION:
        raise SnapshotSchemaError(
            execution, snap.schema, f"newer than this code's v{STATE_SCHEMA_VERSION}"
        )
    plain = _any_decoder.decode(snap.state)
    for version in range(snap.schema, STATE_SCHEMA_VERSION):
        upcast = UPCASTERS.get(version)
        if upcast is None:
            raise SnapshotSchemaError(execution, snap.schema, f"no upcaster from v{version}")
        plain = upcast(plain)
    return msgspec.convert(plain, ExecutionState), snap.covers
