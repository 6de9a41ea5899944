"""Pipelined JetStream publishing with group commit: send many, await their acks together.

nats-py's ``publish_async`` leaves a future unresolved forever when the server
answers with an API error (``APIError.from_error`` raises inside its reply
handler), and its awaited ``publish`` costs twice the CPU. This publisher
keeps one reply subscription, resolves each future with the stored sequence
or a ``PublishError`` carrying the server's ``err_code``. A connection that
cannot send, a 503 (no stream answers) and an ack missing after ACK_TIMEOUT
all become ``Unavailable``.

Group commit. With ``sync_interval: always`` nats-server fsyncs every stored
message, one after the other per stream (~0.23 ms each here, so at most ~4,300
writes/s per stream). An atomic batch (ADR-50) stores many messages with one
fsync, but costs the stream ~3 ms whatever its size (the server stages it in a
scratch store it creates, syncs and removes), so it only pays when a dozen or
more writes wait for the same stream. Each stream natsflow writes to has a lane
(``Lane``): while its writes are slow (the server syncs each one, measured from
the acks), a write goes out at once as a plain publish if fewer than MIN_WINDOW
are in flight on its stream (a lone write is never held back), else it queues,
and MIN_BATCH queued writes go out as one atomic batch. While writes are cheap
(a lazily syncing server), every write goes out at once, as before.

A failed batch (any error: a stale ``Nats-Expected-Last-Subject-Sequence``,
an already-seen ``Nats-Msg-Id``, a limit) is sent again message by message as
plain publishes, so every caller gets the outcome its own message has alone.
"""

from __future__ import annotations

import asyncio
import collections
import itertools

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from natsflow.actors.jetstream.errors import UNAVAILABLE, unavailable
from natsflow.actors.jetstream.lanes import BATCHABLE_HEADERS, Lane, Write
from natsflow.actors.jetstream.topology import atomic_stream
from natsflow.events.errors import NatsflowError

ACK_TIMEOUT = 10.0

ATOMIC_DISABLED = 10174  # the stream has allow_atomic off


class PublishError(NatsflowError):
    """The server refused a publish; ``err_code`` is JetStream's (10071: wrong last sequence)."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        super().__init__(f"publish to {subject}: {description} (code {code}, err_code {err_code})")
        self.subject = subject
        self.code = code
        self.err_code = err_code


class _Sent:
    """What an ack token answers: one plain write, or a whole batch (``writes``)."""

    __slots__ = ("echoed", "future", "lane", "sampled", "subject", "writes")

    def __init__(
        self,
        subject: str,
        future: asyncio.Future[int],
        lane: Lane | None,
        writes: list[Write] | None = None,
    ) -> None:
        self.subject = subject
        self.future = future
        self.lane = lane
        self.writes = writes
        self.sampled = False  # an echo follows it
        self.echoed = 0.0  # when its echo came back


class PublisherStats:
    """Counters of what went out: plain publishes, batches, the writes in them, and
    batches refused as a whole (their writes then went plain, counted in ``plain``)."""

    __slots__ = ("batched", "batches", "failed_batches", "plain")

    def __init__(self) -> None:
        self.plain = 0
        self.batches = 0
        self.batched = 0
        self.failed_batches = 0


class Publisher:
    """Publishes to streams with acks matched by reply subject; one per connection.

    ``group_commit=False`` sends every write plain at once (no lanes, no batches).
    """

    def __init__(
        self, nc: Client, *, ack_timeout: float = ACK_TIMEOUT, group_commit: bool = True
    ) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._group_commit = group_commit
        self._sweep_every = min(1.0, ack_timeout)
        self._prefix = ""
        self._counter = itertools.count()
        self._pending: dict[str, _Sent] = {}
        self._lanes: dict[str, Lane] = {}
        self._batch_ids = f"{NUID().next().decode()}."
        self._sub: Subscription | None = None
        # Futures by send time, swept (at most) once a second: cheaper than a scope per wait.
        # (send time, token, future, subject); a queued write has no token until it is sent.
        self._sent: collections.deque[tuple[float, str, asyncio.Future[int], str]] = (
            collections.deque()
        )
        self.stats = PublisherStats()
        self._sweeping = False
        self._pumps: set[asyncio.Task[None]] = set()

    async def _ensure_started(self) -> None:
        if self._sub is None:
            self._prefix = self._nc.new_inbox() + "."
            self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def send(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[int]:
        """Send (now, or in a batch as soon as one is worth it); the returned future gives
        the stream sequence once the server acks.

        Raises ``Unavailable`` when the connection cannot take the message.
        """
        try:
            await self._ensure_started()
        except UNAVAILABLE as exc:
            raise unavailable(f"publish to {subject}", exc) from exc
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        lane = self._lane(subject, headers) if self._group_commit else None
        if lane is not None and len(payload) > self._nc.max_payload // 2:
            lane = None  # near the size limit: alone, so its error reaches only its caller
        if lane is None or lane.admits():
            try:
                await self._send_plain(subject, payload, headers, future, lane, loop)
            except BaseException:
                future.cancel()  # nobody will wait for it; the sweep forgets it
                raise
            return future
        lane.queue.append(Write(subject, payload, headers, future))
        self._track(loop, "", future, subject)  # times out like a sent write if it never goes
        if lane.atomic is None and lane.worth_batch():
            await self._probe(lane, loop)
        await self._pump(lane, loop)  # it queues when the queue may not send it now
        return future

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> int:
        """Send and wait for the ack; returns the stream sequence."""
        return (await self.wait([await self.send(subject, payload, headers)]))[0]

    async def wait(self, futures: list[asyncio.Future[int]]) -> list[int]:
        """Await acks together; an ack missing after ``ack_timeout`` raises ``Unavailable``."""
        if not futures:
            return []
        try:
            if len(futures) == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:
                future.cancel()  # the sweep forgets it; a queued write is never sent
            raise

    def lane(self, stream: str) -> Lane:
        """The group commit state of ``stream`` (created on first use)."""
        lane = self._lanes.get(stream)
        if lane is None:
            lane = self._lanes[stream] = Lane(stream)
        return lane

    def _lane(self, subject: str, headers: dict[str, str] | None) -> Lane | None:
        if headers and not BATCHABLE_HEADERS.issuperset(headers):
            return None
        stream = atomic_stream(subject)
        return None if stream is None else self.lane(stream)

    def _track(
        self, loop: asyncio.AbstractEventLoop, token: str, future: asyncio.Future[int], subject: str
    ) -> None:
        self._sent.append((loop.time(), token, future, subject))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._sweep_every, self._sweep, loop)

    async def _send_plain(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        future: asyncio.Future[int],
        lane: Lane | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Publish one message with its own reply subject; raises ``Unavailable``."""
        token = str(next(self._counter))
        entry = self._pending[token] = _Sent(subject, future, lane)
        self._track(loop, token, future, subject)
        self.stats.plain += 1
        echo = False
        if lane is not None:
            # Sampled only when others are in flight: a lone write is not held back anyway.
            if lane.outstanding and not lane.batches and loop.time() >= lane.next_sample:
                lane.next_sample = loop.time() + lane.SAMPLE_EVERY
                entry.sampled = echo = True
            lane.outstanding += 1
        nc = self._nc
        try:
            await nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            if echo:
                await nc.publish(self._prefix + "e" + token, b"")
        except BaseException as exc:
            if self._pending.pop(token, None) is not None and lane is not None:
                lane.outstanding -= 1
            if isinstance(exc, UNAVAILABLE):
                raise unavailable(f"publish to {subject}", exc) from exc
            raise

    async def _pump(self, lane: Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Send what the lane's queue may send now: a batch if worth one, else plain."""
        queue = lane.queue
        while queue:
            if lane.atomic and lane.batches < lane.MAX_BATCHES and lane.worth_batch():
                batch = lane.take_batch()
                if batch:
                    await self._send_batch(lane, batch, loop)
                continue
            if lane.outstanding >= lane.window:
                return
            write = queue.popleft()
            if write.future.done():
                continue
            await self._send_queued(write, lane, loop)

    async def _send_queued(self, write: Write, lane: Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Send a write plain after ``send`` returned: a failure goes to its future."""
        future = write.future
        try:
            await self._send_plain(write.subject, write.payload, write.headers, future, lane, loop)
        except Exception as exc:  # any failure of this write is its caller's, not the sender's
            if not future.done():
                future.set_exception(exc)

    async def _send_batch(
        self, lane: Lane, writes: list[Write], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Publish ``writes`` as one atomic batch; only the commit asks for an answer."""
        token = str(next(self._counter))
        batch_id = self._batch_ids + token
        done: asyncio.Future[int] = loop.create_future()  # the batch's own, for the sweep
        last = len(writes)
        self._pending[token] = _Sent(writes[-1].subject, done, lane, writes)
        self._track(loop, token, done, writes[-1].subject)
        lane.batches += 1
        self.stats.batches += 1
        self.stats.batched += last
        publish = self._nc.publish
        try:
            for n, write in enumerate(writes, 1):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
                if write.headers:
                    headers.update(write.headers)
                if n == last:
                    headers["Nats-Batch-Commit"] = "1"
                    await publish(write.subject, write.payload, self._prefix + token, headers)
                else:
                    await publish(write.subject, write.payload, headers=headers)
        except Exception as exc:
            # Half sent, never committed: the server drops it. Each write fails with the
            # reason (NATS away: Unavailable, as a plain write would).
            if self._pending.pop(token, None) is not None:
                lane.batches -= 1
            done.cancel()
            for write in writes:
                if not write.future.done():
                    error = (
                        unavailable(f"publish to {write.subject}", exc)
                        if isinstance(exc, UNAVAILABLE)
                        else exc
                    )
                    write.future.set_exception(error)

    async def _probe(self, lane: Lane, loop: asyncio.AbstractEventLoop) -> None:
        """Ask once whether the lane's stream takes atomic batches (``allow_atomic``)."""
        if loop.time() < lane.probe_after:
            return
        lane.probe_after = loop.time() + 5.0  # one at a time; again in 5 s if no answer
        try:
            reply = await self._nc.request(f"$JS.API.STREAM.INFO.{lane.stream}", b"", timeout=2)
            config = orjson.loads(reply.data).get("config") or {}
        except UNAVAILABLE:
            return
        except orjson.JSONDecodeError:
            return
        if config.get("allow_atomic"):
            lane.atomic = True
        else:
            lane.no_batches()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the futures whose ack is overdue; runs while anything is outstanding."""
        expired = loop.time() - self._ack_timeout
        sent = self._sent
        while sent and (sent[0][2].done() or sent[0][0] <= expired):
            _, token, future, subject = sent.popleft()
            # answered, cancelled by its waiter, or overdue (a queued write has no token)
            entry = self._pending.pop(token, None) if token else None
            if entry is not None and entry.lane is not None:
                if entry.writes is None:
                    entry.lane.outstanding -= 1
                else:
                    entry.lane.batches -= 1
            if not future.done():
                reason = f"no ack within {self._ack_timeout}s"
                if entry is not None and entry.writes is not None:
                    for write in entry.writes:
                        if not write.future.done():
                            write.future.set_exception(
                                unavailable(f"publish to {write.subject}", reason)
                            )
                future.set_exception(unavailable(f"publish to {subject}", reason))
        # Overdue writes freed their places: what waits in a queue goes now (no ack or
        # send may come to pump it, e.g. after the server restarted).
        for lane in self._lanes.values():
            if lane.queue and lane.admits_queued():
                task = loop.create_task(self._pump(lane, loop))
                self._pumps.add(task)
                task.add_done_callback(self._pumps.discard)
        if sent:
            loop.call_later(self._sweep_every, self._sweep, loop)
        else:
            self._sweeping = False

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        if token[:1] == "e":  # an echo: the write it follows is with the stream now
            echoed = self._pending.get(token[1:])
            if echoed is not None:
                echoed.echoed = asyncio.get_running_loop().time()
            return
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        lane = entry.lane
        if lane is not None:
            loop = asyncio.get_running_loop()
            if entry.writes is not None:
                lane.batches -= 1
                await self._on_batch_ack(entry, entry.writes, msg, lane, loop)
            else:
                lane.outstanding -= 1
                if entry.sampled:  # an ack before its echo: the write cost ~nothing
                    lane.sample(loop.time() - entry.echoed if entry.echoed else 0.0)
        if not entry.future.done():
            outcome = _outcome(entry.subject, msg)
            if isinstance(outcome, int):
                entry.future.set_result(outcome)
            else:
                entry.future.set_exception(outcome)
        if lane is not None and lane.queue:
            await self._pump(lane, asyncio.get_running_loop())

    async def _on_batch_ack(
        self,
        entry: _Sent,
        writes: list[Write],
        msg: Msg,
        lane: Lane,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Give each write of a committed batch its sequence; send a failed one's plain."""
        outcome = _outcome(entry.subject, msg)
        if isinstance(outcome, int):
            first = outcome - len(writes) + 1
            for n, write in enumerate(writes):
                if not write.future.done():
                    write.future.set_result(first + n)
            entry.future.set_result(outcome)
            return
        if isinstance(outcome, PublishError):
            # Not stored (a batch is all or nothing): each write alone gets its own outcome.
            self.stats.failed_batches += 1
            if outcome.err_code == ATOMIC_DISABLED:
                lane.no_batches()
            for write in writes:
                if not write.future.done():
                    await self._send_queued(write, lane, loop)
        else:
            for write in writes:
                if not write.future.done():
                    write.future.set_exception(outcome)
        entry.future.cancel()


def _outcome(subject: str, msg: Msg) -> int | NatsflowError:
    """The stored sequence an ack reports, or the error it stands for."""
    if msg.headers and msg.headers.get("Status") == "503":
        reason = "no responders: no stream captures this subject, or JetStream is down"
        return unavailable(f"publish to {subject}", reason)
    try:
        body = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return PublishError(subject, 0, 0, f"unreadable ack {msg.data[:100]!r}")
    error = body.get("error")
    if error and int(error.get("code", 0)) == 503:  # JetStream temporarily unavailable
        reason = str(error.get("description", "JetStream unavailable"))
        return unavailable(f"publish to {subject}", reason)
    if error:
        return PublishError(
            subject,
            int(error.get("code", 0)),
            int(error.get("err_code", 0)),
            str(error.get("description", "")),
        )
    return int(body["seq"])
