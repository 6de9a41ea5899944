"""A lean continuous pull consumer: the hot path of actors and workers.

nats-py's ``fetch`` costs about four times the CPU of keeping a batch of pull
requests outstanding and taking messages in a subscription callback, so this
does the latter (like nats.go's ``Consume``): it asks for ``batch`` messages,
asks again when half are used, and re-arms when a request expires or the
connection was lost.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natsflow.actors.jetstream.errors import UNAVAILABLE, unavailable

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]
# How often the watchdog looks for a reconnect: work resumes this soon after one.
REARM_CHECK = 0.25
# A pull request answered "no responders" (the consumer is gone) is asked again this
# long after: soon enough to resume within ~1 s of the consumer being re-created,
# rare enough not to spin while it is missing.
MISSING_RETRY = 0.75


class Puller:
    """Deliver messages of a durable pull consumer to ``handler``, one at a time, in order.

    The handler must not block for long: it hands the message to an actor's
    mailbox or a worker slot and returns. Back-pressure comes from awaiting a
    full mailbox, which stops the pull requests from being refilled.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        handler: Handler,
        *,
        batch: int = 256,
        expires: float = 5.0,
        credit: Callable[[], int] | None = None,
    ) -> None:
        """``credit`` (optional) says how many more messages the handler's side can take
        without blocking: pull requests never ask for more, so a delivered message never
        waits unseen (and unkept) behind a blocked handler; call ``refill`` when room
        frees up."""
        self._nc = nc
        self._credit = credit
        self._handler = handler
        self._batch = batch
        self._expires = expires
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._outstanding = 0
        self._last_activity = 0.0
        self._missing = False
        self._sub: Subscription | None = None
        self._inbox = ""
        self._stopped = anyio.Event()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Pull until cancelled."""
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg, pending_msgs_limit=-1)
        try:
            await self._request(self._wanted())
            task_status.started()
            # Watchdog: a pull request lost with a reconnect is never answered. It is
            # sent again at once after a reconnect (the client counts them), and after
            # a long silence in case a reconnect went unnoticed.
            reconnects = self._nc.stats["reconnects"]
            while not self._stopped.is_set():
                with anyio.move_on_after(REARM_CHECK):
                    await self._stopped.wait()
                if self._stopped.is_set() or not self._nc.is_connected:
                    continue
                idle = time.monotonic() - self._last_activity
                if (
                    self._nc.stats["reconnects"] != reconnects
                    or idle > self._expires * 1.5
                    or (self._missing and idle > MISSING_RETRY)
                ):
                    reconnects = self._nc.stats["reconnects"]
                    self._missing = False
                    self._outstanding = 0
                    await self._request(self._wanted())
        finally:
            with anyio.move_on_after(2, shield=True):
                if self._sub is not None and self._nc.is_connected and not self._stopped.is_set():
                    await self._sub.unsubscribe()

    async def stop(self) -> None:
        """Take no more messages; returns once the handler has seen every one received.

        The subscription is drained (the server stops delivering to it, and what
        already arrived still goes to the handler), so a stopping process can hand
        back everything it holds at once.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._sub is not None and self._nc.is_connected:
            with anyio.move_on_after(5), contextlib.suppress(*UNAVAILABLE):
                await self._sub.drain()  # type: ignore[no-untyped-call]

    async def _request(self, n: int) -> None:
        if n <= 0:
            return
        self._outstanding += n
        self._last_activity = time.monotonic()
        body = orjson.dumps({"batch": n, "expires": int(self._expires * 1e9)})
        await self._nc.publish(self._next_subject, body, reply=self._inbox)

    async def _on_msg(self, msg: Msg) -> None:
        # time.monotonic, not anyio.current_time: the same clock on asyncio, without
        # anyio's per-call backend lookup (a few µs on every delivered message)
        self._last_activity = time.monotonic()
        headers = msg.headers
        if headers and not msg.data and headers.get("Status") == "503":
            # No responders: the consumer does not exist (deleted, not provisioned yet).
            # The watchdog asks again shortly; asking now would spin until it is back.
            self._outstanding = 0
            self._missing = True
            return
        if headers and not msg.data and "Status" in headers:
            pending = headers.get("Nats-Pending-Messages")
            if pending is not None:
                self._outstanding = max(0, self._outstanding - int(pending))
            elif headers["Status"] in ("408", "409", "404"):
                self._outstanding = 0
            if headers["Status"] == "409" and "Leadership" not in headers.get("Description", ""):
                log.debug("pull request status %s", headers)
        else:
            self._outstanding -= 1
            try:
                await self._handler(msg)
            except Exception:
                log.exception("handler failed on %s; the message will be redelivered", msg.subject)
        await self.refill()

    async def refill(self) -> None:
        """Ask for more once half of what was asked for has come (and credit allows)."""
        if self._outstanding <= self._batch // 2 and not self._stopped.is_set():
            wanted = self._wanted()
            if wanted >= max(1, self._batch // 4) or (wanted > 0 and not self._outstanding):
                await self._request(wanted)

    def _wanted(self) -> int:
        wanted = self._batch - self._outstanding
        if self._credit is not None:
            wanted = min(wanted, self._credit() - self._outstanding)
        return wanted


async def ack(nc: Client, msg: Msg) -> None:
    """Acknowledge without nats-py's per-message bookkeeping (the reply is the ack subject).

    Raises ``Unavailable`` when the connection cannot send it (the message then
    comes again after its ack wait).
    """
    if msg.reply:
        try:
            await nc.publish(msg.reply, b"+ACK")
        except UNAVAILABLE as exc:
            raise unavailable(f"ack the message on {msg.subject}", exc) from exc


async def nak(nc: Client, msg: Msg, *, delay: float = 0.0) -> None:
    """Ask for the message again after ``delay`` seconds; best effort (if NATS cannot
    take the NAK, the message comes again after its ack wait anyway)."""
    if msg.reply:
        body = b"-NAK" if delay <= 0 else b"-NAK " + orjson.dumps({"delay": int(delay * 1e9)})
        with contextlib.suppress(*UNAVAILABLE):
            await nc.publish(msg.reply, body)


async def terminate(nc: Client, msg: Msg) -> None:
    """Stop redelivery of a message that can never be processed (after dead-lettering it)."""
    if msg.reply:
        try:
            await nc.publish(msg.reply, b"+TERM")
        except UNAVAILABLE as exc:
            raise unavailable(f"terminate the message on {msg.subject}", exc) from exc


def delivery(msg: Msg) -> tuple[int, int]:
    """``(delivery count, stream sequence)`` from the ack subject; ``(1, 0)`` without one."""
    return delivery_of(msg.reply) if msg.reply else (1, 0)


def delivery_of(ack_subject: str) -> tuple[int, int]:
    """``(delivery count, stream sequence)`` of an ack subject; ``(1, 0)`` if unreadable.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (v1
    layout), or with domain and account hash in front of the stream (v2, 12 tokens).
    """
    parts = ack_subject.split(".")
    index = 4 if len(parts) == 9 else 6
    try:
        return int(parts[index]), int(parts[index + 1])
    except (IndexError, ValueError):
        return 1, 0
