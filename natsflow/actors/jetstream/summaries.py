"""The summaries' stream, read in order from a sequence: what the execution index follows.

Every summary put (``WriteSummary``) is a message on the stream under the KV
bucket ``natsflow_executions`` (``KV_natsflow_executions``), and its stream
sequence is a total order over all of them. ``SummaryFeed.changes(after)`` reads
that stream from ``after + 1`` with an ordered consumer and yields batches of
``SummaryChange``: the index applies each batch and the last sequence in one
SQLite transaction, so it applies every change exactly once and in order, and a
restart goes on from the sequence it stored. The bucket keeps one revision per
execution, so reading from 0 reads the latest summary of every execution: a
rebuild is a catch-up from 0.

A delete or purge of a key (retention) is a change with no summary; a summary
that cannot be decoded is a change carrying the decoder's reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import EXECUTIONS_BUCKET, summary_subject
from natsflow.events.errors import Unavailable, Undecodable
from natsflow.events.views import ExecutionSummary

log = logging.getLogger(__name__)

SUMMARIES_STREAM = f"KV_{EXECUTIONS_BUCKET}"
_PREFIX = summary_subject("")
_DELETES = frozenset({"DEL", "PURGE"})
_decoder = msgspec.json.Decoder(ExecutionSummary)

MAX_BATCH = 2000
"""Most changes in one batch (one SQLite transaction)."""
PENDING_LIMIT = 500_000
"""Most changes delivered and not applied yet (a catch-up's read-ahead)."""


@dataclass(frozen=True, slots=True)
class SummaryChange:
    """One put (``summary``), delete or purge (neither) of an execution's summary."""

    seq: int
    execution: str
    summary: ExecutionSummary | None = None
    problem: str | None = None  # the summary's bytes cannot be decoded: why


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where the summaries' stream is: its last sequence, and when it was created (a
    stream created anew, or a sequence behind the index's cursor, means rebuild)."""

    last_seq: int
    created: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes read together, and how many more the stream held when the last was read."""

    changes: tuple[SummaryChange, ...]
    pending: int


class SummaryFeed:
    """Reads the summaries' stream for the execution index."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self._nc = nc
        self._js = js

    async def position(self) -> StreamPosition | None:
        """The stream's last sequence and creation time; None while it does not exist."""
        with unavailable_as(f"look up the stream {SUMMARIES_STREAM}"):
            try:
                info = await self._js.stream_info(SUMMARIES_STREAM)
            except NotFoundError:
                return None
        created = info.created.isoformat() if info.created is not None else ""
        return StreamPosition(last_seq=info.state.last_seq, created=created)

    async def changes(self, after: int, *, idle: float = 1.0) -> AsyncGenerator[Batch]:
        """Batches of changes from stream sequence ``after + 1`` on, forever; an empty
        batch after ``idle`` seconds without a change (the caller checks its file then)."""
        what = f"follow the summaries in {SUMMARIES_STREAM}"
        with unavailable_as(what):
            sub = await self._js.subscribe(
                f"{_PREFIX}>",
                stream=SUMMARIES_STREAM,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
                ),
                # The server's flow control paces delivery, but not to the queue's length:
                # a short queue drops messages (slow consumer) and stalls the catch-up.
                pending_msgs_limit=PENDING_LIMIT,
            )
        try:
            while True:
                with unavailable_as(what):
                    try:
                        first = await sub.next_msg(timeout=idle)
                    except NatsTimeout:
                        yield Batch(changes=(), pending=0)
                        continue
                    msgs = [first]
                    while len(msgs) < MAX_BATCH and sub.pending_msgs > 0:
                        msgs.append(await sub.next_msg(timeout=idle))
                yield Batch(
                    changes=tuple(change_of(msg) for msg in msgs),
                    pending=msgs[-1].metadata.num_pending,
                )
        finally:
            try:
                with unavailable_as(what):
                    await sub.unsubscribe()
            except Unavailable:
                pass  # the connection is gone, and the consumer with it


def change_of(msg: Msg) -> SummaryChange:
    seq = msg.metadata.sequence.stream
    execution = msg.subject.removeprefix(_PREFIX)
    operation = (msg.headers or {}).get("KV-Operation")
    if operation in _DELETES:
        return SummaryChange(seq=seq, execution=execution)
    try:
        return SummaryChange(seq=seq, execution=execution, summary=_decoder.decode(msg.data))
    except msgspec.DecodeError as exc:
        problem = Undecodable(
            execution, "summary", SUMMARIES_STREAM, msg.subject, seq, str(exc), msg.data
        )
        log.warning("%s", problem)
        return SummaryChange(seq=seq, execution=execution, problem=str(problem))
