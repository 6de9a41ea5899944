"""Pipelined JetStream publishing: send many, await their acks together.

nats-py's ``publish_async`` leaves a future unresolved forever when the server
answers with an API error (``APIError.from_error`` raises inside its reply
handler), and its awaited ``publish`` costs twice the CPU. This publisher
keeps one reply subscription, resolves each future with the stored sequence
or a ``PublishError`` carrying the server's ``err_code``. A connection that
cannot send, a 503 (no stream answers) and an ack missing after ACK_TIMEOUT
all become ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natsflow.actors.jetstream.errors import UNAVAILABLE, unavailable
from natsflow.events.errors import NatsflowError

ACK_TIMEOUT = 10.0


class PublishError(NatsflowError):
    """The server refused a publish; ``err_code`` is JetStream's (10071: wrong last sequence)."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        super().__init__(f"publish to {subject}: {description} (code {code}, err_code {err_code})")
        self.subject = subject
        self.code = code
        self.err_code = err_code


class Publisher:
    """Publishes to streams with acks matched by reply subject; one per connection."""

    def __init__(self, nc: Client, *, ack_timeout: float = ACK_TIMEOUT) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._sweep_every = min(1.0, ack_timeout)
        self._prefix = ""
        self._counter = itertools.count()
        self._pending: dict[str, tuple[str, asyncio.Future[int]]] = {}
        self._sub: Subscription | None = None
        # Futures by send time, swept (at most) once a second: cheaper than a scope per wait.
        self._sent: collections.deque[tuple[float, str, asyncio.Future[int]]] = collections.deque()
        self._sweeping = False

    async def _ensure_started(self) -> None:
        if self._sub is None:
            self._prefix = self._nc.new_inbox() + "."
            self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def send(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[int]:
        """Send now; the returned future gives the stream sequence once the server acks.

        Raises ``Unavailable`` when the connection cannot take the message.
        """
        try:
            await self._ensure_started()
        except UNAVAILABLE as exc:
            raise unavailable(f"publish to {subject}", exc) from exc
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending[token] = (subject, future)
        self._sent.append((loop.time(), token, future))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._sweep_every, self._sweep, loop)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException as exc:
            self._pending.pop(token, None)
            future.cancel()  # nobody will wait for it; the sweep forgets it
            if isinstance(exc, UNAVAILABLE):
                raise unavailable(f"publish to {subject}", exc) from exc
            raise
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
                future.cancel()  # the sweep forgets it
            raise

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the futures whose ack is overdue; runs while anything is outstanding."""
        expired = loop.time() - self._ack_timeout
        sent = self._sent
        while sent and (sent[0][2].done() or sent[0][0] <= expired):
            _, token, future = sent.popleft()
            entry = self._pending.pop(token, None)  # answered, cancelled by its waiter, or overdue
            if not future.done():
                subject = entry[0] if entry else "?"
                reason = f"no ack within {self._ack_timeout}s"
                future.set_exception(unavailable(f"publish to {subject}", reason))
        if sent:
            loop.call_later(self._sweep_every, self._sweep, loop)
        else:
            self._sweeping = False

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        subject, future = entry
        if future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            reason = "no responders: no stream captures this subject, or JetStream is down"
            future.set_exception(unavailable(f"publish to {subject}", reason))
            return
        try:
            body = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            future.set_exception(PublishError(subject, 0, 0, f"unreadable ack {msg.data[:100]!r}"))
            return
        error = body.get("error")
        if error and int(error.get("code", 0)) == 503:  # JetStream temporarily unavailable
            reason = str(error.get("description", "JetStream unavailable"))
            future.set_exception(unavailable(f"publish to {subject}", reason))
        elif error:
            future.set_exception(
                PublishError(
                    subject,
                    int(error.get("code", 0)),
                    int(error.get("err_code", 0)),
                    str(error.get("description", "")),
                )
            )
        else:
            future.set_result(int(body["seq"]))
