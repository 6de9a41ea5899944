"""Which natsflow instances are running: each answers requests on ``natsflow.presence``.

A starting process asks before it pulls anything. When nobody answers, every
delivery still unacknowledged belongs to an instance that is gone, and can be
handed back at once (``deliveries.release``) instead of after the ack
wait. The answer also tells an operator what runs: ``nats req natsflow.presence ''``
(with ``--replies 0``) lists every instance.
"""

from __future__ import annotations

import os
import socket
import time

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natsflow.actors.jetstream.errors import unavailable_as

PRESENCE_SUBJECT = "natsflow.presence"
# How long a starting process listens for answers: a live instance answers in about a
# millisecond; one too busy to answer within this is taken for gone (its messages are
# then delivered again, which the runtime tolerates: steps are at-least-once). The
# starting process asks only when no other client is pulling from its consumers.
ANSWER_WINDOW = 0.1


class Instance(msgspec.Struct, frozen=True):
    """One running natsflow process."""

    instance: str
    host: str
    pid: int
    roles: tuple[str, ...]
    started: float


def this_instance(roles: tuple[str, ...]) -> Instance:
    host = socket.gethostname()
    pid = os.getpid()
    return Instance(f"{host}:{pid}:{time.time_ns()}", host, pid, roles, time.time())


async def others_running(nc: Client, me: Instance, window: float = ANSWER_WINDOW) -> list[Instance]:
    """The other instances that answer within ``window`` seconds."""
    found: list[Instance] = []
    decoder = msgspec.json.Decoder(Instance)

    async def collect(msg: Msg) -> None:
        try:
            other = decoder.decode(msg.data)
        except msgspec.DecodeError:
            return  # not ours to judge; an unreadable answer still is no instance
        if other.instance != me.instance:
            found.append(other)

    with unavailable_as("ask which natsflow instances are running"):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=collect)
        try:
            await nc.publish(PRESENCE_SUBJECT, b"", reply=inbox)
            await anyio.sleep(window)
        finally:
            await sub.unsubscribe()
    return found


async def answer_presence(nc: Client, me: Instance) -> Subscription:
    """Answer presence requests until the returned subscription is unsubscribed."""
    body = msgspec.json.encode(me)

    async def answer(msg: Msg) -> None:
        if msg.reply:
            await nc.publish(msg.reply, body)

    with unavailable_as("answer natsflow presence requests"):
        return await nc.subscribe(PRESENCE_SUBJECT, cb=answer)
