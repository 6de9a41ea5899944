"""The summaries' stream, read in order from a sequence: what the execution index follows.

Every summary put (``WriteSummary``) is a message on the stream under the KV
bucket ``natsflow_executions`` (``KV_natsflow_executions``), and its stream
sequence is a total order over all of them. ``SummaryFeed.changes(after)`` reads
that stream from ``after + 1`` with a pull consumer and yields batches of
``SummaryChange``: the index applies each batch and the last sequence in one
SQLite transaction, so it applies every change exactly once and in order, and a
restart goes on from the sequence it stored. The bucket keeps one revision per
execution, so reading from 0 reads the latest summary of every execution: a
rebuild is a catch-up from 0.

A delete of a key is a change with no summary; retention's purge marker carries
the execution's tombstone (status ``expired``) as its summary; a summary
that cannot be decoded is a change carrying the decoder's reason.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.retention import tombstone_of
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
CONSUMER_IDLE = 60.0
"""Seconds without a pull request after which the server drops the reader's consumer."""
CHECK_EVERY = 10
"""Idle batches between checks that the reader's consumer still exists."""


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
        batch after ``idle`` seconds without a change (the caller checks its file then).

        A pull consumer read a batch at a time: at most ``MAX_BATCH`` messages are ever
        held here, however far behind the index is (a push consumer's read-ahead held up
        to the whole catch-up). A gap in the consumer's own sequence (a message lost
        on the way) or a consumer gone raises ``Unavailable``: the caller reads again
        from the last change it applied."""
        what = f"follow the summaries in {SUMMARIES_STREAM}"
        name = f"natsflow_index_{secrets.token_hex(8)}"
        with unavailable_as(what):
            sub = await self._js.pull_subscribe(
                f"{_PREFIX}>",
                stream=SUMMARIES_STREAM,
                config=ConsumerConfig(
                    name=name,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=after + 1,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=CONSUMER_IDLE,
                    mem_storage=True,
                ),
                pending_msgs_limit=2 * MAX_BATCH,
            )
        delivered = 0  # the consumer's sequence of the last message read: no gaps
        idled = 0
        try:
            while True:
                with unavailable_as(what):
                    try:
                        msgs = await sub.fetch(MAX_BATCH, timeout=idle)
                        if not msgs:  # only status messages (a request expired)
                            raise NatsTimeout
                    except NatsTimeout:
                        idled += 1
                        if idled % CHECK_EVERY == 0:
                            await sub.consumer_info()  # NotFound (Unavailable) when gone
                        yield Batch(changes=(), pending=0)
                        continue
                idled = 0
                for msg in msgs:
                    consumer_seq = msg.metadata.sequence.consumer
                    if consumer_seq != delivered + 1:
                        raise Unavailable(
                            f"{what}: message {delivered + 1} of the reader missed"
                            f" (got {consumer_seq}): reading again"
                        )
                    delivered = consumer_seq
                yield Batch(
                    changes=tuple(change_of(msg) for msg in msgs),
                    pending=msgs[-1].metadata.num_pending,
                )
        finally:
            try:
                with unavailable_as(what):
                    await sub.unsubscribe()
                    await self._js.delete_consumer(SUMMARIES_STREAM, name)
            except (Unavailable, NotFoundError):
                pass  # the connection or the consumer is gone already


def change_of(msg: Msg) -> SummaryChange:
    seq = msg.metadata.sequence.stream
    execution = msg.subject.removeprefix(_PREFIX)
    operation = (msg.headers or {}).get("KV-Operation")
    if operation in _DELETES:  # retention's marker carries the tombstone row
        return SummaryChange(seq=seq, execution=execution, summary=tombstone_of(msg.data))
    try:
        return SummaryChange(seq=seq, execution=execution, summary=_decoder.decode(msg.data))
    except msgspec.DecodeError as exc:
        problem = Undecodable(
            execution, "summary", SUMMARIES_STREAM, msg.subject, seq, str(exc), msg.data
        )
        log.warning("%s", problem)
        return SummaryChange(seq=seq, execution=execution, problem=str(problem))
