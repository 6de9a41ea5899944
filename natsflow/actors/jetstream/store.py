"""The event store adapter: the only code that speaks JetStream for execution history.

Appends are compare-and-set on the execution's subject
(``Nats-Expected-Last-Subject-Sequence``); error 10071 becomes
``ConcurrencyConflict``; a server that cannot be reached or does not answer
in time raises ``Unavailable``. Histories are read with batched direct gets
(ADR-31), not a consumer per read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import anyio
import msgspec
import orjson
from msgspec.structs import replace
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from natsflow.actors.jetstream.errors import unavailable, unavailable_as
from natsflow.actors.jetstream.publisher import Publisher, PublishError
from natsflow.actors.jetstream.topology import (
    ARCHIVE_STREAM,
    EVENTS_STREAM,
    events_subject,
    snapshot_subject,
)
from natsflow.events.codec import (
    decode_batch,
    decode_batch_with_cause,
    decode_snapshot,
    encode_batch,
    encode_snapshot,
)
from natsflow.events.errors import ConcurrencyConflict, Undecodable
from natsflow.events.fold import fold
from natsflow.events.model import INITIAL, AnyEvent, ExecutionStarted, ExecutionState

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071
PUBLISH_TIMEOUT = 10.0
READ_BATCH = 2000
MAX_LOAD_ATTEMPTS = 5


# How many recent decisions an actor remembers by the inbox message that caused them.
RECENT_DECISIONS = 64


class Loaded:
    """An execution as read from the stream: its state and the sequence to append after.

    ``recent`` maps the inbox sequence of each of the last decisions read (at most
    ``RECENT_DECISIONS``) to its events. ``problem`` is the message the read stopped at
    because it cannot be decoded (only with ``load(partial=True)``): the state is then
    the fold of what precedes it.
    """

    __slots__ = ("events_read", "last_seq", "problem", "recent", "snapshot_seq", "state")

    def __init__(
        self,
        state: ExecutionState,
        last_seq: int,
        snapshot_seq: int,
        events_read: int,
        recent: dict[int, tuple[AnyEvent, ...]],
        problem: Undecodable | None = None,
    ) -> None:
        self.state = state
        self.last_seq = last_seq
        self.snapshot_seq = snapshot_seq
        self.events_read = events_read
        self.recent = recent
        self.problem = problem


class EventStore:
    """Append, read and snapshot execution histories in NATSFLOW_EVENTS."""

    def __init__(
        self, nc: Client, js: JetStreamContext, publisher: Publisher | None = None
    ) -> None:
        self._nc = nc
        self._js = js
        self._publisher = publisher or Publisher(nc)

    async def append(
        self, execution: str, events: tuple[AnyEvent, ...], expected: int, cause: int = 0
    ) -> int:
        """Append one batch iff the subject's last sequence is ``expected``; returns the new one.

        ``cause`` is the inbox sequence of the message the batch answers (0: none).
        """
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected)}
        try:
            return await self._publisher.publish(
                events_subject(execution), encode_batch(events, cause), headers
            )
        except PublishError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise ConcurrencyConflict(execution, expected) from None
            raise

    async def write_snapshot(
        self,
        execution: str,
        state: ExecutionState,
        covers: int,
        expected_snapshot: int,
        *,
        archive: bool = False,
    ) -> int:
        """Replace the execution's snapshot (rollup), then drop the events it covers.

        The snapshot is written first and the purge keeps the event at ``covers``,
        so a crash between the two leaves a readable history, and appends that
        compare against ``covers`` still match. With the archive on, only events
        the archive stream has already copied are dropped (sourcing is
        asynchronous); the rest go with a later snapshot.
        """
        headers = {
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(expected_snapshot),
        }
        try:
            snapshot_seq = await self._publisher.publish(
                snapshot_subject(execution), encode_snapshot(state, covers), headers
            )
        except PublishError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:  # a newer snapshot exists: keep it
                raise ConcurrencyConflict(execution, expected_snapshot) from None
            raise
        upto = covers
        if archive:
            upto = min(covers, await self._archived_upto(execution) + 1)
        if upto > 1:
            with unavailable_as(f"execution {execution}: purge the events its snapshot covers"):
                await self._js.purge_stream(
                    EVENTS_STREAM, subject=events_subject(execution), seq=upto
                )
        return snapshot_seq

    async def _archived_upto(self, execution: str) -> int:
        """The origin sequence of the execution's last event copied into the archive."""
        msg = await self._last(ARCHIVE_STREAM, events_subject(execution))
        source = msg.headers.get("Nats-Stream-Source") if msg and msg.headers else None
        return int(source.split()[1]) if source else 0

    async def load(
        self, execution: str, *, use_snapshot: bool = True, partial: bool = False
    ) -> Loaded:
        """Latest snapshot (if any) plus the events after it, folded.

        A message that cannot be decoded raises ``Undecodable`` (naming its subject and
        sequence), or with ``partial`` is returned as ``Loaded.problem`` beside the state
        folded from what precedes it. An undecodable snapshot is read around when the
        history it covers is still whole in the stream (the fold of every event is the
        same state); its sequence stays the one the next snapshot replaces.

        Another instance may write a newer snapshot and purge the events it covers
        while this one reads the tail; the tail would then have a gap. So the
        snapshot is looked up again afterwards, and the read repeated if it moved.
        """
        for _ in range(MAX_LOAD_ATTEMPTS):
            loaded = await self._load_once(execution, use_snapshot)
            if use_snapshot:
                latest = await self._last_message(snapshot_subject(execution))
                if (latest[0] if latest else 0) != loaded.snapshot_seq:
                    continue
            if loaded.problem is not None and not partial:
                raise loaded.problem
            return loaded
        raise ConcurrencyConflict(execution, loaded.last_seq)

    async def _load_once(self, execution: str, use_snapshot: bool) -> Loaded:
        state = replace(INITIAL, execution_id=execution)
        start, snapshot_seq = 1, 0
        bad_snapshot: Undecodable | None = None
        if use_snapshot:
            snap = await self._last_message(snapshot_subject(execution))
            if snap is not None:
                snapshot_seq, data = snap
                try:
                    state, covers = decode_snapshot(data, execution)
                    start = covers + 1
                except msgspec.DecodeError as exc:
                    subject = snapshot_subject(execution)
                    bad_snapshot = _undecodable(
                        execution, "snapshot", subject, snapshot_seq, data, exc
                    )
        last_seq, read = start - 1, 0
        recent: dict[int, tuple[AnyEvent, ...]] = {}
        subject = events_subject(execution)
        async for seq, data in self.read_messages(subject, start):
            try:
                batch = decode_batch_with_cause(data)
            except msgspec.DecodeError as exc:
                problem = _undecodable(execution, "event", subject, seq, data, exc)
                return Loaded(state, last_seq, snapshot_seq, read, recent, problem)
            if bad_snapshot is not None and read == 0 and not _starts_history(batch.events):
                break  # what the snapshot covers is gone: the state cannot be known
            state = fold(batch.events, state)
            last_seq, read = seq, read + len(batch.events)
            if batch.cause:
                recent[batch.cause] = batch.events
                if len(recent) > RECENT_DECISIONS:
                    del recent[next(iter(recent))]
        if bad_snapshot is not None:
            if read == 0:
                return Loaded(state, 0, snapshot_seq, 0, {}, bad_snapshot)
            log.warning("%s; read around it, from the whole history still stored", bad_snapshot)
        if read == 0 and snapshot_seq == 0:
            last_seq = 0
        return Loaded(state, last_seq, snapshot_seq, read, recent)

    async def read_history(
        self, execution: str, *, archive: bool = False
    ) -> AsyncIterator[tuple[int, AnyEvent | Undecodable]]:
        """Every event still stored for the execution (from the archive stream if asked);
        a message that cannot be decoded comes as ``Undecodable``, and the rest follow."""
        stream = ARCHIVE_STREAM if archive else EVENTS_STREAM
        subject = events_subject(execution)
        async for seq, data in self.read_messages(subject, 1, stream=stream):
            try:
                events = decode_batch(data)
            except msgspec.DecodeError as exc:
                yield seq, _undecodable(execution, "event", subject, seq, data, exc, stream)
                continue
            for event in events:
                yield seq, event

    async def snapshot_info(self, execution: str) -> tuple[int, ExecutionState, int] | None:
        """(snapshot sequence, state, covered sequence) of the latest snapshot, if any;
        raises ``Undecodable`` for one that cannot be decoded."""
        snap = await self._last_message(snapshot_subject(execution))
        if snap is None:
            return None
        try:
            state, covers = decode_snapshot(snap[1], execution)
        except msgspec.DecodeError as exc:
            subject = snapshot_subject(execution)
            raise _undecodable(execution, "snapshot", subject, snap[0], snap[1], exc) from None
        return snap[0], state, covers

    async def read_messages(
        self, subject: str, start: int, *, stream: str = EVENTS_STREAM
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Messages on one subject from sequence ``start``, by batched direct get."""
        seq = start
        while True:
            batch = await self._direct_batch(stream, subject, seq)
            for msg_seq, data in batch:
                yield msg_seq, data
            if len(batch) < READ_BATCH:
                return
            seq = batch[-1][0] + 1

    async def _direct_batch(self, stream: str, subject: str, seq: int) -> list[tuple[int, bytes]]:
        """One ADR-31 batch: collected in a callback, not a timed ``next_msg`` per message
        (which costs more than decoding and folding the events)."""
        request = orjson.dumps({"seq": seq, "next_by_subj": subject, "batch": READ_BATCH})
        inbox = self._nc.new_inbox()
        batch: list[tuple[int, bytes]] = []
        end = asyncio.Event()
        status: list[str] = []

        async def collect(msg: Msg) -> None:
            headers = msg.headers or {}
            code = headers.get("Status")
            if code is None:
                batch.append((int(headers["Nats-Sequence"]), msg.data))
            else:
                status.append(code)
                end.set()

        what = f"read {subject} from {stream}"
        with unavailable_as(what):
            sub = await self._nc.subscribe(
                inbox, cb=collect, pending_msgs_limit=READ_BATCH * 2 + 10
            )
            try:
                await self._nc.publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=inbox)
                with anyio.fail_after(PUBLISH_TIMEOUT):
                    await end.wait()
            finally:
                await sub.unsubscribe()
        if status[0] not in ("204", "404"):  # end of batch, or nothing (more) on the subject
            raise _status_error(what, status[0])
        return batch

    async def _last_message(self, subject: str) -> tuple[int, bytes] | None:
        msg = await self._last(EVENTS_STREAM, subject)
        if msg is None:
            return None
        assert msg.headers is not None
        return int(msg.headers["Nats-Sequence"]), msg.data

    async def _last(self, stream: str, subject: str) -> Msg | None:
        """The last message on ``subject`` in ``stream`` (direct get), or None."""
        request = orjson.dumps({"last_by_subj": subject})
        what = f"read the last message on {subject} from {stream}"
        with unavailable_as(what):
            msg = await self._nc.request(
                f"$JS.API.DIRECT.GET.{stream}", request, timeout=PUBLISH_TIMEOUT
            )
        status = msg.headers.get("Status") if msg.headers else None
        if status == "404":
            return None
        if status is not None:
            raise _status_error(what, status)
        return msg


def _undecodable(
    execution: str,
    what: str,
    subject: str,
    seq: int,
    data: bytes,
    exc: msgspec.DecodeError,
    stream: str = EVENTS_STREAM,
) -> Undecodable:
    return Undecodable(execution, what, stream, subject, seq, str(exc), data)


def _starts_history(events: tuple[AnyEvent, ...]) -> bool:
    """Whether a batch is an execution's first: the history from it on is whole."""
    return bool(events) and isinstance(events[0], ExecutionStarted)


def _status_error(what: str, status: str) -> Exception:
    """A direct get's error status: 503 and 408 mean the stream did not answer in time."""
    if status in ("503", "408"):
        return unavailable(what, f"status {status}")
    return RuntimeError(f"{what}: unexpected status {status}")
