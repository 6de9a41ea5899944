"""Group commit lanes: per stream, whether to send a write now or queue it for a batch.

The publisher (``publisher.py``) sends; a ``Lane`` only decides, from what is in
flight on its stream and what the acks say writes cost there. Pure bookkeeping,
no I/O.
"""

from __future__ import annotations

import asyncio
import collections
import math

# Headers a message may carry inside an atomic batch; any other (a rollup, a
# schedule, a TTL) sends it plain. The server checks an expected subject
# sequence against the stream as it was before the batch, hence at most one such
# write per subject per batch.
BATCHABLE_HEADERS = frozenset({"Nats-Msg-Id", "Nats-Expected-Last-Subject-Sequence"})
EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
MAX_BATCH = 1000  # nats-server's default limit (10199 above it)


class Lane:
    """One stream's group commit: what is in flight, what waits, and whether writes are slow.

    A plain write is slow when the server syncs it to disk before it acks. Every
    SAMPLE_EVERY seconds, right after a write, the publisher sends itself an empty
    core message (an echo): the server routes it back at once, while the write's
    ack leaves once the stream has stored (and synced) it. The gap between their
    arrivals leaves out most of the client's own delays (both wait in the same
    socket). Writes are slow while the median of the last SAMPLES gaps is at least
    SLOW. Seen here under load: lazy, medians of 10-120 us (single gaps up to ~2 ms
    when the server waits for a CPU); ``sync_interval: always``, 1-20 ms (single
    gaps down to ~0 when the client reads both late).

    While writes are slow, at most MIN_WINDOW plain writes are in flight on the
    stream; the next ones queue, and MIN_BATCH of them go as one batch (one at a
    time). While they are not, or the stream takes no batches (``atomic`` False),
    nothing queues and nothing is batched.
    """

    MIN_WINDOW = 4  # plain writes in flight on a stream that syncs each one
    # A batch costs the stream ~3 ms whatever its size (nats-server 2.15.1 stages it
    # in a scratch store it creates, syncs and removes), a plain write ~0.25 ms with
    # fsync: batches pay from ~13 writes. 16 to 64 did best at 200 executions here.
    MIN_BATCH = 32
    MAX_BATCHES = 1  # batches in flight per stream: more only queue in the server
    SLOW = 5e-4  # seconds: the median echo gap that means "the server syncs each write"
    SAMPLE_EVERY = 0.01
    SAMPLES = 15

    __slots__ = (
        "atomic",
        "batches",
        "learn",
        "min_batch",
        "next_sample",
        "outstanding",
        "probe_after",
        "queue",
        "samples",
        "stream",
        "window",
    )

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.outstanding = 0  # plain writes sent, not answered
        self.batches = 0  # batches sent, not answered
        self.queue: collections.deque[Write] = collections.deque()
        self.window = math.inf  # plain writes allowed in flight
        self.min_batch = math.inf  # queued writes that make a batch
        self.samples: collections.deque[float] = collections.deque(maxlen=self.SAMPLES)
        self.next_sample = 0.0
        self.learn = True  # False: keep ``window`` and ``min_batch`` as set (tests)
        self.atomic: bool | None = None  # allow_atomic on the stream (None: not asked yet)
        self.probe_after = 0.0

    def admits(self) -> bool:
        """Whether a new write goes out plain now (nothing queued, window not full)."""
        return not self.queue and self.outstanding < self.window

    def admits_queued(self) -> bool:
        """Whether the queue's head may go now (plain, or in a batch)."""
        return self.outstanding < self.window or (
            bool(self.atomic) and self.batches < self.MAX_BATCHES and self.worth_batch()
        )

    def worth_batch(self) -> bool:
        """Whether enough writes wait for a batch."""
        return len(self.queue) >= self.min_batch

    def sample(self, gap: float) -> None:
        """Learn from one echo: the write's ack came ``gap`` seconds after it."""
        samples = self.samples
        samples.append(gap)
        if self.learn and len(samples) == self.SAMPLES:
            slow = sorted(samples)[self.SAMPLES // 2] >= self.SLOW
            self._batch(slow and self.atomic is not False)

    def no_batches(self) -> None:
        """The stream takes no atomic batches: every write goes plain, at once."""
        self.atomic = False
        self._batch(False)

    def _batch(self, on: bool) -> None:
        self.window = self.MIN_WINDOW if on else math.inf
        self.min_batch = self.MIN_BATCH if on else math.inf

    def take_batch(self) -> list[Write]:
        """The queue's head as one batch: live writes, at most MAX_BATCH, ending before a
        write that checks its subject's last sequence when the batch writes that subject
        already (the server would refuse the whole batch)."""
        batch: list[Write] = []
        subjects: set[str] = set()
        queue = self.queue
        while queue and len(batch) < MAX_BATCH:
            write = queue[0]
            if write.future.done():  # its waiter gave up: never sent
                queue.popleft()
                continue
            headers = write.headers
            if headers and EXPECTED_SUBJECT_SEQ in headers and write.subject in subjects:
                break
            subjects.add(write.subject)
            batch.append(queue.popleft())
        return batch


class Write:
    """A write waiting in a lane's queue, and the future its caller awaits."""

    __slots__ = ("future", "headers", "payload", "subject")

    def __init__(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        future: asyncio.Future[int],
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.future = future
