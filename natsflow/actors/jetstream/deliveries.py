"""Deliveries this process holds: kept alive while held, handed back when it stops or died.

The consumers' ack wait is short (``takeover_after``, a few seconds) so that
another instance takes over quickly when one dies. Work that is held longer -- a
message waiting in a mailbox, a long step -- is kept from redelivery by one loop
per pool that sends in-progress acks (``+WPI``) for what it has held longer than
a third of the ack wait: nothing is sent per fast message.

Two ways to hand messages back at once instead of after the ack wait:
``Held.hand_back`` (a draining process NAKs what it will not finish) and
``release`` (a starting process notes the deliveries pending before it pulls,
``pending_deliveries``; if no other natsflow instance turns out to be running,
their holder is gone and it NAKs them; the delivery count is kept, so the
runtime still knows the message came before).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import NamedTuple

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.errors import UNAVAILABLE, unavailable_as
from natsflow.actors.jetstream.puller import delivery_of

log = logging.getLogger(__name__)


class Held:
    """The unsettled deliveries of one pool: ack subject -> when it was taken."""

    def __init__(self, nc: Client, ack_wait: float) -> None:
        self._nc = nc
        self._period = max(0.05, ack_wait / 3)
        self._since: dict[str, float] = {}
        self._emptied: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._since)

    def stream_sequences(self) -> set[int]:
        """The stream sequences of what is held now."""
        return {delivery_of(reply)[1] for reply in self._since}

    def hold(self, msg: Msg) -> None:
        if msg.reply:
            self._since[msg.reply] = time.monotonic()

    def settle(self, msg: Msg) -> None:
        """Acked, terminated or left to its ack wait: no longer kept alive here."""
        if msg.reply:
            self._since.pop(msg.reply, None)
            if not self._since and self._emptied is not None:
                self._emptied.set()

    async def wait_empty(self) -> None:
        """Return once every held delivery is settled or handed back."""
        while self._since:
            self._emptied = anyio.Event()
            await self._emptied.wait()

    async def keep_alive(self) -> None:
        """Send ``+WPI`` every third of the ack wait for what was held at least that long."""
        while True:
            await anyio.sleep(self._period)
            due = time.monotonic() - self._period
            for reply in [r for r, since in self._since.items() if since <= due]:
                try:
                    await self._nc.publish(reply, b"+WPI")
                except UNAVAILABLE:
                    break  # NATS is away: redelivery after the ack wait is then expected

    async def hand_back(self, msg: Msg | None = None) -> int:
        """NAK ``msg`` (or everything still held) so that it is delivered again at once."""
        if msg is None:
            replies = list(self._since)
        elif msg.reply:
            replies = [msg.reply]
        else:
            return 0
        for reply in replies:
            self._since.pop(reply, None)
        if not self._since and self._emptied is not None:
            self._emptied.set()
        return await release(self._nc, replies)


class Pending(NamedTuple):
    """What other instances hold on one consumer, seen before this process pulls."""

    ack_subjects: dict[int, str]
    """stream sequence -> ack subject, one per delivery nobody acked yet"""
    pulling: int
    """pull requests of live clients waiting on the consumer (a dead client's are
    dropped by the server as soon as its connection is gone)"""


async def pending_deliveries(js: JetStreamContext, stream: str, consumer: str) -> Pending:
    """The ack subjects of every delivery of ``consumer`` that nobody acked yet.

    Read by a starting process before it pulls anything, so that all of them belong
    to other instances; if none of those turns out to be running, ``release`` hands
    them back. The server takes a NAK for a pending stream sequence with any consumer
    sequence above the ack floor, so each ack subject is rebuilt from the consumer's
    info and the pending messages still in the (work-queue) stream.
    """
    with unavailable_as(f"read the pending deliveries of consumer {consumer}"):
        try:
            info = await js.consumer_info(stream, consumer)
        except NotFoundError:
            return Pending({}, 0)
        pulling = info.num_waiting or 0
        if not info.num_ack_pending or info.delivered is None or info.ack_floor is None:
            return Pending({}, pulling)
        last_delivered = info.delivered.stream_seq or 0
        dseq = info.delivered.consumer_seq or 0
        filters = list(info.config.filter_subjects or [])
        if info.config.filter_subject:
            filters.append(info.config.filter_subject)
        subjects: dict[int, str] = {}
        seq = (info.ack_floor.stream_seq or 0) + 1
        while seq <= last_delivered:
            try:
                msg = await js.get_msg(stream, seq, next=True, subject=_common(filters))
            except NotFoundError:
                break
            found = msg.seq or 0
            if found == 0 or found > last_delivered:
                break
            if len(filters) > 1 and not any(_matches(msg.subject or "", f) for f in filters):
                seq = found + 1  # another consumer's message in the shared stream
                continue
            subjects[found] = f"$JS.ACK.{stream}.{consumer}.1.{found}.{dseq}.0.0"
            seq = found + 1
    return Pending(subjects, pulling)


async def release(nc: Client, ack_subjects: list[str]) -> int:
    """NAK each delivery (see ``pending_deliveries``): delivered again at once, with its
    delivery count kept. Returns how many NAKs went out."""
    sent = 0
    for subject in ack_subjects:
        try:
            await nc.publish(subject, b"-NAK")
            sent += 1
        except UNAVAILABLE:
            break  # delivered again after the ack wait instead
    with contextlib.suppress(*UNAVAILABLE, TimeoutError):
        await nc.flush(timeout=5)
    return sent


def _common(filters: list[str]) -> str:
    """One subject covering every filter (the work-queue streams hold nothing else)."""
    if len(filters) == 1:
        return filters[0]
    prefix = ".".join(filters[0].split(".")[:2]) if filters else ">"
    return f"{prefix}.>" if filters else ">"


def _matches(subject: str, pattern: str) -> bool:
    """Whether ``subject`` matches the filter ``pattern`` (NATS ``*`` and ``>`` wildcards)."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for i, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens) or (want != "*" and want != tokens[i]):
            return False
    return len(tokens) == len(wanted)
