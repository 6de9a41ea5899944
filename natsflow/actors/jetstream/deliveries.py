"""Deliveries this process holds: kept alive while held, handed back when it stops or died.

The consumers' ack wait is short (``takeover_after``, a few seconds) so that
another instance takes over quickly when one dies. Work that is held longer -- a
message waiting in a mailbox, a long step -- is kept from redelivery by one loop
per pool that sends in-progress acks (``+WPI``) for what it has held longer than
a third of the ack wait: nothing is sent per fast message.

Two ways to hand messages back at once instead of after the ack wait:
``Held.hand_back`` (a draining process NAKs what it will not finish) and
``release_pending`` (a process that starts while no other natsflow instance is
running NAKs every delivery its dead predecessor held; the delivery count is
kept, so the runtime still knows the message came before).
"""

from __future__ import annotations

import logging
import time

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.errors import UNAVAILABLE, unavailable_as

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
        replies = [msg.reply] if msg is not None and msg.reply else list(self._since)
        if msg is not None and not msg.reply:
            return 0
        sent = 0
        for reply in replies:
            self._since.pop(reply, None)
            try:
                await self._nc.publish(reply, b"-NAK")
                sent += 1
            except UNAVAILABLE:
                pass  # delivered again after the ack wait instead
        if not self._since and self._emptied is not None:
            self._emptied.set()
        return sent


async def release_pending(nc: Client, js: JetStreamContext, stream: str, consumer: str) -> int:
    """NAK every delivery of ``consumer`` that nobody acked yet; returns how many.

    Only for a process that found no other natsflow instance running: the holders
    of these deliveries are gone, and without this they would wait for the ack
    wait. The server takes a NAK for a pending stream sequence with any consumer
    sequence above the ack floor, so the ack subject is rebuilt from the consumer's
    info and the pending messages still in the (work-queue) stream.
    """
    with unavailable_as(f"release the deliveries of consumer {consumer}"):
        try:
            info = await js.consumer_info(stream, consumer)
        except NotFoundError:
            return 0
        if not info.num_ack_pending or info.delivered is None or info.ack_floor is None:
            return 0
        last_delivered = info.delivered.stream_seq or 0
        dseq = info.delivered.consumer_seq or 0
        filters = list(info.config.filter_subjects or [])
        if info.config.filter_subject:
            filters.append(info.config.filter_subject)
        released = 0
        seq = (info.ack_floor.stream_seq or 0) + 1
        while seq <= last_delivered:
            try:
                msg = await js.get_msg(stream, seq, next=True, subject=_common(filters))
            except NotFoundError:
                break
            found = msg.seq or 0
            if found == 0 or found > last_delivered:
                break
            subject = f"$JS.ACK.{stream}.{consumer}.1.{found}.{dseq}.0.0"
            await nc.publish(subject, b"-NAK")
            released += 1
            seq = found + 1
        await nc.flush()
    if released:
        log.info("released %d deliveries of %s held by a stopped instance", released, consumer)
    return released


def _common(filters: list[str]) -> str:
    """One subject covering every filter (the work-queue streams hold nothing else)."""
    if len(filters) == 1:
        return filters[0]
    prefix = ".".join(filters[0].split(".")[:2]) if filters else ">"
    return f"{prefix}.>" if filters else ">"
