"""Carrying out commands: tasks, durable timers and summaries, pipelined.

Commands come from pure code (``natsflow.events.commands``), from a fresh
decision or from the state when a message is redelivered; this is the one
place they turn into messages, in one ``match``. Every publish carries a
``Nats-Msg-Id`` derived from the command (or is a KV put), so carrying out the
same command twice (after a crash, on redelivery) stores it once.
"""

from __future__ import annotations

import asyncio
from typing import assert_never

from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.children import Children
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.timers import cancel_timers, schedule_headers
from natsflow.actors.jetstream.topology import (
    cancel_subject,
    result_subject,
    summary_subject,
    task_subject,
    timer_subject,
)
from natsflow.actors.jetstream.waits import DELETE_HEADERS, OpenWait, wait_record_subject
from natsflow.actors.metrics import Metrics
from natsflow.events.commands import (
    AnyCommand,
    CancelChild,
    CancelTasks,
    CancelTimers,
    DispatchTask,
    ListenFor,
    NotifyParent,
    StartChild,
    StartTimer,
    StopListening,
    WriteSummary,
)
from natsflow.events.messages import (
    CancelNotice,
    Task,
    TimerDue,
    idempotency_key,
    json_encoder,
)
from natsflow.events.model import (
    TERMINAL_EXECUTION,
    AnyEvent,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionState,
    ExecutionUnpaused,
    StepAttemptFailed,
    StepCompleted,
    StepScheduled,
)

_STEERED = {ExecutionResumed: "resumed", ExecutionPaused: "paused", ExecutionUnpaused: "unpaused"}


class Effects:
    """Carries out commands: every message sent first, then all acks awaited together."""

    def __init__(
        self,
        publisher: Publisher,
        js: JetStreamContext,
        metrics: Metrics,
        nc: Client,
        children: Children,
    ) -> None:
        self._publisher = publisher
        self._js = js
        self._metrics = metrics
        # core NATS, for cancel notices (no stream keeps them)
        self._nc = nc
        self._children = children

    async def carry_out(self, commands: tuple[AnyCommand, ...]) -> None:
        pending: list[asyncio.Future[int]] = []
        cancels: list[CancelTimers] = []
        for command in commands:
            match command:
                case DispatchTask():
                    pending.append(await self._task(command))
                case StartTimer():
                    pending.append(await self._timer(command))
                case CancelTimers():
                    cancels.append(command)  # after the acks: a timer set in this batch is stored
                case WriteSummary():
                    pending.append(await self._summary(command))
                case CancelTasks():
                    await self._cancel_tasks(command)
                case ListenFor():
                    pending.append(await self._listen(command))
                case StopListening():
                    pending.extend([await self._forget_wait(command, s) for s in command.steps])
                case StartChild():
                    if (report := await self._children.start(command)) is not None:
                        pending.append(report)
                case NotifyParent():
                    pending.append(await self._children.notify(command))
                case CancelChild():
                    pending.append(await self._children.cancel(command))
                case _:
                    assert_never(command)
        await self._publisher.wait(pending)
        for cancel in cancels:
            await cancel_timers(self._js, cancel.execution_id)

    async def _task(self, command: DispatchTask) -> asyncio.Future[int]:
        execution = command.execution_id
        key = idempotency_key(execution, command.step, command.attempt, command.iteration)
        task = Task(
            execution_id=execution,
            step=command.step,
            attempt=command.attempt,
            iteration=command.iteration,
            action=command.action,
            input=command.input,
            timeout=command.timeout,
            idempotency_key=key,
            reply_to=result_subject(execution),
        )
        return await self._publisher.send(
            task_subject(command.action), json_encoder.encode(task), {"Nats-Msg-Id": key}
        )

    async def _timer(self, command: StartTimer) -> asyncio.Future[int]:
        execution, timer = command.execution_id, command.timer_id
        body = json_encoder.encode(TimerDue(timer_id=timer, step=command.step))
        headers = schedule_headers(execution, timer, command.due)
        return await self._publisher.send(timer_subject(execution, timer), body, headers)

    async def _cancel_tasks(self, command: CancelTasks) -> None:
        """Tell the workers (core NATS, fire and forget: the execution is cancelled already,
        whatever they do; a late result is ignored). A child is cancelled by ``CancelChild``."""
        notice = CancelNotice(
            execution_id=command.execution_id, steps=command.steps, reason=command.reason
        )
        await self._nc.publish(cancel_subject(command.execution_id), json_encoder.encode(notice))

    async def _summary(self, command: WriteSummary) -> asyncio.Future[int]:
        return await self._publisher.send(
            summary_subject(command.execution_id),
            json_encoder.encode(command.summary),
        )

    async def _listen(self, command: ListenFor) -> asyncio.Future[int]:
        wait = OpenWait(
            execution_id=command.execution_id, step=command.step, subject=command.subject
        )
        subject = wait_record_subject(command.execution_id, command.step)
        return await self._publisher.send(subject, json_encoder.encode(wait))

    async def _forget_wait(self, command: StopListening, step: str) -> asyncio.Future[int]:
        subject = wait_record_subject(command.execution_id, step)
        return await self._publisher.send(subject, b"", dict(DELETE_HEADERS))

    def count(
        self, before: ExecutionState, after: ExecutionState, events: tuple[AnyEvent, ...]
    ) -> None:
        """Metrics of a fresh decision: dispatches, attempt outcomes, executions."""
        metrics = self._metrics
        for event in events:
            if isinstance(event, StepScheduled):
                metrics.child(metrics.steps_dispatched, event.action).inc()
            elif isinstance(event, StepCompleted | StepAttemptFailed):
                self._count_attempt(after, event)
            elif isinstance(event, ExecutionResumed | ExecutionPaused | ExecutionUnpaused):
                action = _STEERED[type(event)]
                metrics.child(metrics.executions_steered, after.workflow, action).inc()
        if before.status != after.status:
            self._count_execution(before, after)

    def _count_attempt(
        self, state: ExecutionState, event: StepCompleted | StepAttemptFailed
    ) -> None:
        step = state.steps.get(event.step)
        action = step.action if step and step.action else "other"
        if isinstance(event, StepCompleted):
            outcome = "completed"
        else:
            outcome = "retrying" if event.retry_at is not None else "failed"
        self._metrics.child(self._metrics.step_attempts, action, outcome).inc()

    def _count_execution(self, before: ExecutionState, after: ExecutionState) -> None:
        if before.status == "pending":
            self._metrics.executions_started.labels(workflow=after.workflow).inc()
        if after.status in TERMINAL_EXECUTION:
            self._metrics.executions_finished.labels(
                workflow=after.workflow, status=after.status
            ).inc()
            if after.started_at is not None and after.finished_at is not None:
                self._metrics.execution_duration.labels(workflow=after.workflow).observe(
                    after.finished_at - after.started_at
                )
