"""Trigger subjects: every message on a deployed trigger subject starts one execution.

``Triggers.run`` follows the deployed workflows: it keeps the trigger stream's
subjects equal to their trigger subjects, and runs one puller per enabled
workflow on its own consumer. A message becomes ``Starter.start(workflow,
payload)`` with an idempotency key, so that a message delivered again (a crash
before its ack, several instances) finds the execution it started:

- the manifest's ``idempotency_key`` template, rendered over the payload
  (``input``), the message's ``subject`` and ``headers``, if it has one;
- else ``msgid:<Nats-Msg-Id>`` if the publisher set one (the stream also drops a
  copy published again within its 120 s duplicate window);
- else the message's place in the stream (``stream:<timestamp>:<sequence>``).

A payload that is not JSON, or that the start refuses (a disabled or unknown
workflow, a key template that does not fit), goes to the dead letters with the
reason; a passing failure (NATS away) brings the message back in a second.
A message with a ``Natsflow-Reply-To`` header gets a ``TriggerReply`` on that
subject: the execution id, or why it was refused (``natsflow.events.replies``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
import orjson
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from natsflow.actors.deadletter import dead_letter
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.puller import Puller, ack, delivery_of, nak
from natsflow.actors.jetstream.triggers import (
    TRIGGERS_STREAM,
    delete_trigger_consumer,
    ensure_trigger_consumer,
    ensure_trigger_stream,
    trigger_consumer,
)
from natsflow.actors.mailbox import Mailbox
from natsflow.actors.metrics import Metrics
from natsflow.actors.starter import Starter
from natsflow.events.errors import InputError, NatsflowError, NotFound
from natsflow.events.replies import REPLY_TO_HEADER, TriggerReply, reply_subject
from natsflow.manifests.schema import Workflow
from natsflow.manifests.subjects import overlaps

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0
STARTS_AT_ONCE = 128
reply_encoder = msgspec.json.Encoder()


# workflow -> (its trigger subjects, enabled), for the deployed workflows that have some
DeployedTriggers = dict[str, tuple[tuple[str, ...], bool]]


def trigger_subjects(workflow: Workflow) -> tuple[str, ...]:
    return tuple(sorted({t.subject for t in workflow.triggers if t.subject}))


async def deployed_triggers(definitions: Definitions) -> DeployedTriggers:
    """The trigger subjects of every deployed workflow's latest version."""
    deployed: DeployedTriggers = {}
    for row in await definitions.list():
        workflow = await definitions.get(row["workflow"], row["version"])
        if subjects := trigger_subjects(workflow):
            deployed[workflow.name] = (subjects, workflow.enabled)
    return deployed


def overlapping_triggers(workflow: Workflow, deployed: DeployedTriggers) -> list[str]:
    """Every trigger subject of ``workflow`` that another deployed workflow's overlaps
    (one message would start two workflows' executions, or one at random)."""
    return [
        f"triggers[{index}].subject: {trigger.subject!r} overlaps {theirs!r},"
        f" a trigger of workflow {other!r}"
        for index, trigger in enumerate(workflow.triggers)
        if trigger.subject
        for other, (subjects, _) in deployed.items()
        if other != workflow.name
        for theirs in subjects
        if overlaps(trigger.subject, theirs)
    ]


async def capture_triggers(
    js: JetStreamContext, deployed: DeployedTriggers, *, exact: bool = True
) -> None:
    """Make the trigger stream capture the ``deployed`` trigger subjects (a deploy calls
    it before it answers, so a message published right after is kept)."""
    every = [subject for subjects, _ in deployed.values() for subject in subjects]
    await ensure_trigger_stream(js, every, exact=exact)


class Triggers:
    """Turns trigger messages into started executions, following what is deployed."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        definitions: Definitions,
        starter: Starter,
        publisher: Publisher,
        metrics: Metrics,
        *,
        ack_wait: float,
    ) -> None:
        self._nc = nc
        self._js = js
        self._definitions = definitions
        self._starter = starter
        self._publisher = publisher
        self._metrics = metrics
        self._ack_wait = ack_wait
        # workflow -> (its subjects, the scope its puller runs in)
        self._running: dict[str, tuple[tuple[str, ...], anyio.CancelScope]] = {}

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Reconcile at start and after every deploy, until cancelled."""
        async with anyio.create_task_group() as tg:
            await self._reconcile_logged(tg)
            task_status.started()
            while True:
                await self._definitions.changed()
                await self._reconcile_logged(tg)

    async def _reconcile_logged(self, tg: TaskGroup) -> None:
        try:
            await self._reconcile(tg)
        except NatsflowError as exc:
            log.warning("triggers not brought up to date: %s (again at the next deploy)", exc)

    async def _reconcile(self, tg: TaskGroup) -> None:
        wanted = await deployed_triggers(self._definitions)
        # Only adds subjects: the deploy that changes them sets them exactly.
        await capture_triggers(self._js, wanted, exact=False)
        for name, (subjects, enabled) in wanted.items():
            running = self._running.get(name)
            if enabled and (running is None or running[0] != subjects):
                await self._stop(name)
                await ensure_trigger_consumer(self._js, name, list(subjects), self._ack_wait)
                scope = anyio.CancelScope()
                self._running[name] = (subjects, scope)
                tg.start_soon(self._pull, name, scope, name=f"trigger {name}")
                log.info("triggers of %s: %s", name, ", ".join(subjects))
            elif not enabled:
                await self._stop(name)
                # Its messages wait in the stream until it is enabled again.
                await delete_trigger_consumer(self._js, name)
        for name in [n for n in self._running if n not in wanted]:
            await self._stop(name)
            await delete_trigger_consumer(self._js, name)

    async def _stop(self, workflow: str) -> None:
        running = self._running.pop(workflow, None)
        if running is not None:
            running[1].cancel()

    async def _pull(self, workflow: str, scope: anyio.CancelScope) -> None:
        """Pull the workflow's trigger messages; STARTS_AT_ONCE of them start side by side
        (each is acked after its own start), so one start's round trip does not bound
        the rate."""
        mailbox: Mailbox[Msg] = Mailbox(STARTS_AT_ONCE)

        async def slot() -> None:
            while True:
                await self._start(workflow, await mailbox.receive())

        with scope:
            async with anyio.create_task_group() as tg:
                for index in range(STARTS_AT_ONCE):
                    tg.start_soon(slot, name=f"trigger {workflow} slot {index}")
                puller = Puller(
                    self._nc,
                    TRIGGERS_STREAM,
                    trigger_consumer(workflow),
                    mailbox.send,
                    batch=2 * STARTS_AT_ONCE,
                )
                await puller.run()

    async def _start(self, workflow: str, msg: Msg) -> None:
        metrics = self._metrics
        headers = dict(msg.headers or {})
        try:
            payload: Any = orjson.loads(msg.data) if msg.data else None
        except orjson.JSONDecodeError as exc:
            error = f"trigger for {workflow} on {msg.subject}: the payload is not JSON: {exc}"
            await self._refuse(workflow, msg, headers, error)
            return
        message_id = headers.get("Nats-Msg-Id")
        if message_id:
            key = f"msgid:{message_id}"
        else:
            parts = (msg.reply or "").split(".")
            stamp = parts[-2] if len(parts) >= 9 else "0"
            key = f"stream:{stamp}:{delivery_of(msg.reply or '')[1]}"
        trigger = {"subject": msg.subject, "headers": headers}
        try:
            started = await self._starter.start(workflow, payload, key, trigger=trigger)
        except (InputError, NotFound) as exc:
            await self._refuse(
                workflow, msg, headers, f"trigger for {workflow} on {msg.subject}: {exc}"
            )
            return
        except NatsflowError as exc:
            log.warning("trigger for %s on %s: %s; again shortly", workflow, msg.subject, exc)
            await nak(self._nc, msg, delay=RETRY_DELAY)
            return
        outcome = "accepted" if started.created else "deduplicated"
        metrics.child(metrics.trigger_messages, outcome).inc()
        # Answered before the ack: a message taken again after a crash is answered again.
        await self._reply(
            headers,
            TriggerReply(
                workflow=workflow,
                execution_id=started.execution_id,
                version=started.version,
                created=started.created,
            ),
        )
        await ack(self._nc, msg)

    async def _refuse(self, workflow: str, msg: Msg, headers: dict[str, str], error: str) -> None:
        self._metrics.child(self._metrics.trigger_messages, "rejected").inc()
        letter = await dead_letter(self._nc, self._publisher, self._metrics, msg, "trigger", error)
        await self._reply(headers, TriggerReply(workflow=workflow, error=error, dead_letter=letter))

    async def _reply(self, headers: dict[str, str], reply: TriggerReply) -> None:
        """Answer on the subject the publisher named (``Natsflow-Reply-To``), if any."""
        if REPLY_TO_HEADER not in headers:
            return
        subject = reply_subject(headers)
        if subject is None:
            log.warning(
                "trigger for %s: %s %r is not a subject to reply on",
                reply.workflow,
                REPLY_TO_HEADER,
                headers[REPLY_TO_HEADER],
            )
            return
        # Core NATS, not awaited: the publisher listens now or not at all.
        await self._nc.publish(subject, reply_encoder.encode(reply))
