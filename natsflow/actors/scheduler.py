"""The scheduler actor: schedule triggers (``cron``, ``every``) start executions.

Each schedule trigger is a chain of ``@at`` message schedules in the server
(``actors.jetstream.schedules``): the next due time waits there as one
message, fires into ``natsflow.fire.<workflow>.<i>``, and the instance that
takes the fire (a shared durable consumer: one of them) starts the execution
and sets the next due time. So no instance polls, a restart loses nothing, and
several instances share the work.

Exactly one execution per due time: the start's idempotency key is
``schedule:<workflow>:<trigger>:<due time>`` (``Starter.start`` claims it in
KV), so a fire delivered twice, or taken again after a crash, finds the same
execution; setting the next due time is a compare-and-set on the schedule
subject, so two instances never fork a chain.

Deploys are followed on every instance (a watch of the workflows bucket): the
latest enabled version's schedule triggers get a schedule if they have none
from that version (a redeploy of the same version or a restart keeps the
running chain); the others, of a disabled or deleted workflow or of a
trigger a new version dropped, are purged. A fire of a version that is no
longer the latest is dropped, so nothing fires for a replaced definition.

``overlap: queue``: a due time that finds the trigger's previous execution
still running stays the chain's one message, set to come back a second later
(``Fire.check_at``) until that execution has ended; due times passing
meanwhile are merged into it. So it needs no state beside the chain and
survives restarts like any due time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.puller import Puller, ack, nak, terminate
from natsflow.actors.jetstream.schedules import (
    Fire,
    current_fire,
    decode_fire,
    drop_schedules,
    follow_deploys,
    set_schedule,
)
from natsflow.actors.jetstream.topology import SCHEDULER_CONSUMER, SCHEDULES_STREAM
from natsflow.actors.metrics import Metrics
from natsflow.actors.starter import Starter
from natsflow.events.errors import InputError, NotFound, Unavailable
from natsflow.events.model import TERMINAL_EXECUTION
from natsflow.events.views import ExecutionSummary
from natsflow.manifests.schedules import (
    is_late,
    is_schedule,
    next_due,
    rfc3339,
    schedule_input,
    schedule_key,
)
from natsflow.manifests.schema import Trigger, Workflow

log = logging.getLogger(__name__)

RETRY_AFTER = 1.0  # seconds before a fire that met an unavailable NATS is taken again
QUEUE_CHECK = 1.0  # seconds between looks at the previous execution (``overlap: queue``)


class Scheduler:
    """Follow deploys to keep each schedule trigger's next due time set; start an
    execution for each due time that fires (see the module docstring).

    ``clock`` gives the time (``time.time`` unless a test passes another);
    ``summaries(execution)`` reads an execution's summary (``overlap: skip``);
    ``metrics.schedule_fires`` counts each due time taken by its outcome.
    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        definitions: Definitions,
        starter: Starter,
        summaries: Callable[[str], Awaitable[ExecutionSummary | None]],
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self._definitions = definitions
        self._starter = starter
        self._summaries = summaries
        self._clock = clock
        self._metrics = metrics or Metrics()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow deploys and take fires until cancelled; ready once every deployed
        workflow's schedules were reconciled."""
        puller = Puller(self._nc, SCHEDULES_STREAM, SCHEDULER_CONSUMER, self._on_fire, batch=16)
        async with anyio.create_task_group() as tg:
            await tg.start(follow_deploys, self._js, self._on_deploy)
            await tg.start(puller.run)
            task_status.started()

    async def _on_deploy(self, workflow: str, version: str | None) -> None:
        try:
            await self.reconcile(workflow, version)
        except (Unavailable, NotFound) as exc:
            # The next deploy, restart or fire of this workflow reconciles again.
            log.warning("schedules of workflow %r not reconciled: %s", workflow, exc)

    async def reconcile(self, workflow: str, version: str | None) -> None:
        """Make the schedules of ``workflow`` those of ``version`` (None: deleted)."""
        definition = await self._definitions.get(workflow, version) if version else None
        wanted = _schedules(definition)
        await drop_schedules(self._js, workflow, frozenset(wanted))
        assert version is not None or not wanted
        for index, trigger in wanted.items():
            seq, fire = await current_fire(self._js, workflow, index)
            if fire is not None and fire.version == version:
                continue  # set by this version already: a restart or a redeploy keeps it
            due = next_due(trigger, self._clock())
            previous = fire.previous if fire is not None else None
            started_at = fire.started_at if fire is not None else None
            new = Fire(
                workflow=workflow,
                version=str(version),
                trigger=index,
                due=due,
                previous=previous,
                started_at=started_at,
            )
            if await set_schedule(self._js, new, after_seq=seq):
                log.info(
                    "schedule %s[%d] of version %s: next at %s",
                    workflow,
                    index,
                    version,
                    rfc3339(due),
                )

    async def _on_fire(self, msg: Msg) -> None:
        try:
            fire = decode_fire(msg.data)
        except msgspec.DecodeError as exc:
            log.error("dropped a schedule fire on %s that cannot be read: %s", msg.subject, exc)
            await terminate(self._nc, msg)
            return
        try:
            await self.fired(fire)
        except Unavailable as exc:
            log.warning("schedule fire %s[%d] postponed: %s", fire.workflow, fire.trigger, exc)
            await nak(self._nc, msg, delay=RETRY_AFTER)
            return
        await ack(self._nc, msg)

    async def fired(self, fire: Fire) -> None:
        """Start the execution of ``fire``'s due time (as its policies say), then set the
        trigger's next due time. Raises ``Unavailable`` (safe to run again)."""
        try:
            version, definition = await self._definitions.latest(fire.workflow)
        except NotFound:
            return  # deleted: its schedules are purged
        trigger = _schedules(definition).get(fire.trigger)
        if version != fire.version or trigger is None:
            log.info(
                "dropped a fire of %s[%d] version %s (latest: %s, %s)",
                fire.workflow,
                fire.trigger,
                fire.version,
                version,
                "enabled" if definition.enabled else "disabled",
            )
            # If the chain of the latest version broke meanwhile, it starts again.
            await self.reconcile(fire.workflow, version)
            self._count("dropped")
            return
        now = self._clock()
        previous, started_at = fire.previous, fire.started_at
        if trigger.overlap == "queue" and await self._still_runs(fire.previous):
            # The due time waits in the chain itself: the schedule comes back to look again.
            if fire.check_at is None:
                log.info(
                    "schedule %s[%d] at %s waits: %s still runs (overlap: queue)",
                    fire.workflow,
                    fire.trigger,
                    rfc3339(fire.due),
                    fire.previous,
                )
                self._count("queued")
            waiting = msgspec.structs.replace(fire, check_at=now + QUEUE_CHECK)
            await set_schedule(self._js, waiting, after_seq=0)
            return
        outcome = await self._skip_reason(fire, trigger, now)
        if outcome is None:
            try:
                started = await self._starter.start(
                    fire.workflow,
                    schedule_input(trigger, fire.due),
                    schedule_key(fire.workflow, fire.trigger, fire.due),
                )
                outcome = "started" if started.created else "deduplicated"
                # A deduplicated start is this due time's execution, started by an attempt
                # moments ago (whose next due time was not set): now is close enough.
                previous, started_at = started.execution_id, now
            except (InputError, NotFound) as exc:  # disabled or deleted meanwhile
                log.warning("schedule %s[%d] started nothing: %s", fire.workflow, fire.trigger, exc)
                outcome = "refused"
        # Due times missed while the chain waited (no instance ran) are not replayed one by
        # one: the next is the first one still to come.
        following = msgspec.structs.replace(
            fire,
            due=next_due(trigger, max(now, fire.due)),
            previous=previous,
            started_at=started_at,
            check_at=None,
        )
        await set_schedule(self._js, following, after_seq=0)
        # Counted once the next due time is set: a fire taken again after an outage
        # (Unavailable above) is counted by the attempt that got through.
        self._count(outcome)

    def _count(self, outcome: str) -> None:
        self._metrics.child(self._metrics.schedule_fires, outcome).inc()

    async def _skip_reason(self, fire: Fire, trigger: Trigger, now: float) -> str | None:
        """Why ``fire`` starts nothing (``missed``, ``overlap``), or None: it starts one."""
        where = f"schedule {fire.workflow}[{fire.trigger}] at {rfc3339(fire.due)}"
        # A due time that waited its turn (``overlap: queue``) was on time when it came.
        late = fire.check_at is None and is_late(trigger, fire.due, now)
        if trigger.catchup == "skip" and late:
            log.info("%s skipped: missed (catchup: skip), taken at %s", where, rfc3339(now))
            return "missed"
        if trigger.overlap == "skip" and await self._still_runs(fire.previous):
            log.info("%s skipped: %s still runs (overlap: skip)", where, fire.previous)
            return "overlap"
        return None

    async def _still_runs(self, execution: str | None) -> bool:
        """Whether the execution a trigger started last has not ended (or not started)."""
        if execution is None:
            return False
        summary = await self._summaries(execution)
        return summary is None or summary.status not in TERMINAL_EXECUTION


def _schedules(definition: Workflow | None) -> dict[int, Trigger]:
    """The schedule triggers of an enabled definition, by their index in ``triggers``."""
    if definition is None or not definition.enabled:
        return {}
    return {i: t for i, t in enumerate(definition.triggers) if is_schedule(t)}
