"""The ``triggers`` verb of the admin API: every deployed workflow's triggers, as they stand.

For each trigger of each workflow's latest version: its kind and expression,
and what JetStream says of it (read through ``actors.jetstream.trigger_reads``
and ``actors.jetstream.schedules``): a subject trigger's messages waiting, a
schedule's next due time, and when each last fired. Nothing is counted by
scanning messages: an enabled workflow with one subject trigger is read from
its consumer; otherwise the stream's per-subject counts under the trigger's
subject (see ``TriggerRow`` for what each field means).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.schedules import current_fire
from natsflow.actors.jetstream.trigger_reads import (
    ConsumerActivity,
    consumer_activity,
    waiting_on,
)
from natsflow.events.errors import NotFound
from natsflow.manifests.schema import Trigger, Workflow
from natsflow.service.protocol import TriggerList, TriggerRow

NOT_COUNTED = "more distinct subjects waiting than one stream info lists: not counted"


class TriggerOperations:
    """Lists deployed triggers with their backlogs and last fires."""

    def __init__(self, nc: Client, js: JetStreamContext, definitions: Definitions) -> None:
        self._nc = nc
        self._js = js
        self._definitions = definitions

    async def ls(self) -> TriggerList:
        rows: list[TriggerRow] = []
        for row in await self._definitions.list():
            try:
                workflow = await self._definitions.get(row["workflow"], row["version"])
            except NotFound:
                continue  # deleted meanwhile
            rows.extend(await self._rows(workflow, row["version"]))
        rows.sort(key=lambda r: (r.workflow, r.index))
        return TriggerList(triggers=tuple(rows))

    async def _rows(self, workflow: Workflow, version: str) -> list[TriggerRow]:
        subjects = [t for t in workflow.triggers if t.subject]
        activity = None
        if subjects and workflow.enabled:
            activity = await consumer_activity(self._js, workflow.name)
        rows = []
        for index, trigger in enumerate(workflow.triggers):
            base = TriggerRow(
                workflow=workflow.name,
                version=version,
                enabled=workflow.enabled,
                index=index,
                kind=_kind(trigger),
                subject=trigger.subject,
                schedule=_schedule(trigger),
                timezone=(trigger.timezone or "UTC") if trigger.cron else None,
            )
            if trigger.subject is not None:
                rows.append(await self._subject_row(base, trigger.subject, activity, subjects))
            else:
                rows.append(await self._schedule_row(base, workflow))
        return rows

    async def _subject_row(
        self,
        row: TriggerRow,
        subject: str,
        activity: ConsumerActivity | None,
        subjects: list[Trigger],
    ) -> TriggerRow:
        last = activity.last_delivered if activity is not None else None
        if activity is not None and len(subjects) == 1:
            pending: int | None = activity.pending
        else:
            # Disabled (no consumer: its messages wait in the stream), or one of several
            # subject triggers sharing a consumer: the stream counts by subject.
            pending = await waiting_on(self._nc, subject)
        note = NOT_COUNTED if pending is None else None
        if not row.enabled:
            note = note or "disabled: its messages wait until it is enabled again"
        return _with(row, pending=pending, last_fired_at=last, note=note)

    async def _schedule_row(self, row: TriggerRow, workflow: Workflow) -> TriggerRow:
        if not workflow.enabled:
            return _with(row, note="disabled: no due time is set")
        _, fire = await current_fire(self._js, workflow.name, row.index)
        if fire is None:
            return _with(row, note="no due time set now (firing, or not set up yet)")
        return _with(
            row,
            next_due=fire.due,
            last_fired_at=fire.started_at,
            last_execution=fire.previous,
            note=None
            if fire.check_at is None
            else f"waiting for {fire.previous} to end (overlap: queue)",
        )


def _with(row: TriggerRow, **fields: Any) -> TriggerRow:
    return msgspec.structs.replace(row, **fields)


def _kind(trigger: Trigger) -> Literal["subject", "cron", "every"]:
    if trigger.cron is not None:
        return "cron"
    return "every" if trigger.every is not None else "subject"


def _schedule(trigger: Trigger) -> str | None:
    if trigger.cron is not None:
        return trigger.cron
    return f"{trigger.every:g}s" if trigger.every is not None else None
