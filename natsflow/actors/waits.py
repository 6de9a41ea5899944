"""The waits actor: hears messages on the subjects ``wait`` steps wait for.

Each instance runs one. It watches the open waits (``natsflow_waits``, see
``natsflow.actors.jetstream.waits``) and keeps one core NATS subscription per
waited subject, in the queue group ``natsflow-waits``, so that one instance
forwards each message. A message heard goes to the inbox of every execution
waiting on that subject as a ``signal`` that names the step (its ``Nats-Msg-Id``
makes a retried forward count once); the actor there completes the step with
the message's JSON payload, if it still waits.

The limit, honestly: a subject wait hears messages published while a natsflow
instance listens, from shortly after the wait begins (the time for the record to
reach the watchers). A message published before that, or while no instance runs,
is not heard: a wait that must not miss one should wait for a signal (signals
are kept in the history) or use a trigger subject (captured in a stream).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.topology import inbox_subject
from natsflow.actors.jetstream.waits import OpenWait, watching_waits
from natsflow.events.errors import NatsflowError
from natsflow.events.messages import Signal, json_encoder, signal_msg_id

log = logging.getLogger(__name__)

QUEUE_GROUP = "natsflow-waits"
RETRY_DELAY = 1.0


def payload_of(data: bytes) -> Any:
    """A heard message's payload as the step's output: its JSON, else its text (empty:
    None)."""
    if not data:
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data.decode(errors="replace")


class Waits:
    """Listens on waited subjects and forwards what it hears to the waiting executions."""

    def __init__(self, nc: Client, js: JetStreamContext, publisher: Publisher) -> None:
        self._nc = nc
        self._js = js
        self._publisher = publisher
        self._open: dict[str, OpenWait] = {}  # KV key -> wait
        self._subs: dict[str, Subscription] = {}  # subject -> its subscription

    @property
    def subjects(self) -> tuple[str, ...]:
        """The subjects listened on now."""
        return tuple(self._subs)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        try:
            while True:
                try:
                    async with watching_waits(self._js) as changes:
                        if not started:
                            task_status.started()
                            started = True
                        async for key, wait in changes:
                            await self._change(key, wait)
                except NatsflowError as exc:
                    log.warning("waits: %s; watching again in %ss", exc, RETRY_DELAY)
                if not started:
                    task_status.started()
                    started = True
                await anyio.sleep(RETRY_DELAY)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                for sub in self._subs.values():
                    await sub.unsubscribe()
            self._subs.clear()

    async def _change(self, key: str, wait: OpenWait | None) -> None:
        before = self._open.pop(key, None)
        if wait is not None:
            self._open[key] = wait
        if before is not None and before.subject not in self._waited():
            sub = self._subs.pop(before.subject, None)
            if sub is not None:
                await sub.unsubscribe()
        if wait is not None and wait.subject not in self._subs:
            self._subs[wait.subject] = await self._nc.subscribe(
                wait.subject, queue=QUEUE_GROUP, cb=self._heard
            )

    def _waited(self) -> set[str]:
        return {wait.subject for wait in self._open.values()}

    async def _heard(self, msg: Msg) -> None:
        data = payload_of(msg.data)
        waiting = [w for w in self._open.values() if w.subject == msg.subject or _covers(w, msg)]
        for wait in waiting:
            signal = Signal(name=msg.subject, data=data, id=secrets.token_hex(8), step=wait.step)
            headers = {"Nats-Msg-Id": signal_msg_id(wait.execution_id, signal.id)}
            try:
                await self._publisher.publish(
                    inbox_subject(wait.execution_id), json_encoder.encode(signal), headers
                )
            except NatsflowError as exc:
                log.warning(
                    "waits: a message on %s for execution %s step %s is lost: %s",
                    msg.subject,
                    wait.execution_id,
                    wait.step,
                    exc,
                )


def _covers(wait: OpenWait, msg: Msg) -> bool:
    """Whether ``wait``'s subject (wildcards allowed) matches the subject heard."""
    pattern, subject = wait.subject.split("."), msg.subject.split(".")
    for i, token in enumerate(pattern):
        if token == ">":
            return len(subject) > i
        if i >= len(subject) or token not in ("*", subject[i]):
            return False
    return len(pattern) == len(subject)
