"""Retention in the streams: the sweeps' schedule, and removing one expired execution.

The sweeps come from one ADR-51 ``@every`` message schedule on
``natsflow.retention.every`` (stream NATSFLOW_SCHEDULES): the server publishes a
sweep on ``natsflow.retention.sweep`` at each interval, and the shared durable
consumer ``natsflow-retention`` (one message in flight) hands each to one
instance. So no instance polls on its own, and several share the work.

``expire`` removes one finished execution: first its summary is replaced by a
tombstone (a KV ``PURGE`` marker whose body is the last summary with status
``expired`` and ``updated_at`` the time it expired), as a compare-and-set on
the revision read, so an execution resumed meanwhile is never removed; then its
events and snapshot (NATSFLOW_EVENTS) and anything left in its inbox, timers
and results (NATSFLOW_INBOX) are purged. The archive stream (``NATSFLOW_ARCHIVE=1``)
sources the events and keeps its copy. Its idempotency claim is kept: a
duplicate start with the same key finds this execution, which shows as expired.
The tombstone stays in the summaries' stream (a few hundred bytes), so an index
rebuilt from the stream still says expired.
"""

from __future__ import annotations

import datetime as dt

import msgspec
from msgspec.structs import replace
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyDeletedError, KeyNotFoundError, NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.topology import (
    EVENTS_STREAM,
    EXECUTIONS_BUCKET,
    INBOX_STREAM,
    RETENTION_SCHEDULE,
    RETENTION_SWEEPS,
    SCHEDULES_STREAM,
    bind_bucket,
    events_subject,
    inbox_subject,
    result_subject,
    snapshot_subject,
    summary_subject,
    timers_subject,
)
from natsflow.events.listing import EXPIRED
from natsflow.events.model import TERMINAL_EXECUTION
from natsflow.events.views import ExecutionSummary
from natsflow.manifests.durations import format_duration

_decoder = msgspec.json.Decoder(ExecutionSummary)
_encoder = msgspec.json.Encoder()


async def ensure_sweeps(js: JetStreamContext, every: float) -> None:
    """Make the sweeps' schedule fire every ``every`` seconds (left alone when it does)."""
    schedule = f"@every {format_duration(every)}"
    with unavailable_as(f"set the retention schedule {RETENTION_SCHEDULE}"):
        try:
            last = await js.get_last_msg(SCHEDULES_STREAM, RETENTION_SCHEDULE)
            if (last.headers or {}).get("Nats-Schedule") == schedule:
                return
        except NotFoundError:
            pass
        headers = {"Nats-Schedule": schedule, "Nats-Schedule-Target": RETENTION_SWEEPS}
        await js.publish(RETENTION_SCHEDULE, b"", headers=headers)


async def expire(js: JetStreamContext, execution: str, before: float, now: float) -> bool:
    """Remove ``execution`` if it finished before ``before`` (see the module docstring);
    whether it was removed now (False: running, resumed, gone or removed already)."""
    kv = await bind_bucket(js, EXECUTIONS_BUCKET)
    with unavailable_as(f"read the summary of {execution}"):
        try:
            entry = await kv.get(execution)
        except (KeyNotFoundError, KeyDeletedError):
            return False
    try:
        summary = _decoder.decode(entry.value or b"")
    except msgspec.DecodeError:
        return False  # unreadable: left for an operator to look at
    finished = summary.finished_at
    if summary.status not in TERMINAL_EXECUTION or finished is None or finished >= before:
        return False
    tombstone = replace(summary, status=EXPIRED, paused=False, current=(), updated_at=now)
    headers = {
        "KV-Operation": "PURGE",
        "Nats-Rollup": "sub",
        "Nats-Expected-Last-Subject-Sequence": str(entry.revision or 0),
    }
    with unavailable_as(f"expire the summary of {execution}"):
        try:
            await js.publish(
                summary_subject(execution), _encoder.encode(tombstone), headers=headers
            )
        except APIError as exc:
            if exc.err_code == 10071:  # changed since read (resumed): not expired
                return False
            raise
    await purge_streams(js, execution)
    return True


async def purge_streams(js: JetStreamContext, execution: str) -> None:
    """Purge every message of ``execution`` from the events and inbox streams."""
    with unavailable_as(f"purge the streams of {execution}"):
        for subject in (events_subject(execution), snapshot_subject(execution)):
            await js.purge_stream(EVENTS_STREAM, subject=subject)
        for subject in (
            inbox_subject(execution),
            timers_subject(execution),
            result_subject(execution),
        ):
            await js.purge_stream(INBOX_STREAM, subject=subject)


def tombstone_of(data: bytes) -> ExecutionSummary | None:
    """The tombstone a purge marker carries (``expire``); None for a bare delete."""
    if not data:
        return None
    try:
        summary = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return summary if summary.status == EXPIRED else None


async def expired_summary(js: JetStreamContext, execution: str) -> ExecutionSummary | None:
    """The tombstone of ``execution`` if it expired (``expire``); None otherwise."""
    kv = await bind_bucket(js, EXECUTIONS_BUCKET)
    with unavailable_as(f"read the summary of {execution}"):
        try:
            await kv.get(execution)
        except (KeyNotFoundError, KeyDeletedError) as exc:
            entry = getattr(exc, "entry", None)
            return tombstone_of(entry.value or b"") if entry is not None else None
    return None


async def read_summary_or_tombstone(
    js: JetStreamContext, execution: str
) -> ExecutionSummary | None:
    """The summary of ``execution``, or its tombstone once expired; None if it has neither."""
    summary = await read_summary(js, execution)
    return summary if summary is not None else await expired_summary(js, execution)


def expired_message(execution: str, tombstone: ExecutionSummary) -> str:
    """What ``show`` and ``history`` say of an expired execution."""

    def when(at: float | None) -> str:
        if at is None:
            return "?"
        return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")

    return (
        f"execution {execution!r} ({tombstone.workflow}) expired at {when(tombstone.updated_at)}:"
        f" it finished at {when(tombstone.finished_at)}, and its"
        " workflow's retention removed its history (NATSFLOW_ARCHIVE=1 keeps a copy in"
        " NATSFLOW_ARCHIVE: history --all)"
    )
