"""What an appended batch makes happen outside: tasks, durable timers, summaries.

Every effect is derived from events already appended, and every publish
carries a ``Nats-Msg-Id`` derived from the event, so publishing the same
effect twice (after a crash, on redelivery) stores it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.topology import (
    EXECUTIONS_BUCKET,
    inbox_subject,
    task_subject,
    timer_subject,
)
from natsflow.actors.metrics import Metrics
from natsflow.events.messages import Task, TimerDue, idempotency_key, json_encoder
from natsflow.events.model import (
    TERMINAL_EXECUTION,
    AnyEvent,
    ExecutionState,
    StepAttemptFailed,
    StepCompleted,
    StepScheduled,
    TimerStarted,
)
from natsflow.events.views import summary_of


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Effects:
    """Publishes effects pipelined: all sent, then all acks awaited together."""

    def __init__(self, publisher: Publisher, metrics: Metrics) -> None:
        self._publisher = publisher
        self._metrics = metrics

    async def publish(
        self,
        before: ExecutionState,
        after: ExecutionState,
        events: tuple[AnyEvent, ...],
    ) -> None:
        pending: list[asyncio.Future[int]] = []
        execution = after.execution_id
        for event in events:
            if isinstance(event, StepScheduled):
                pending.append(
                    await self._task(
                        execution,
                        event.step,
                        event.attempt,
                        event.iteration,
                        event.action,
                        event.input,
                        event.timeout,
                    )
                )
                self._metrics.child(self._metrics.steps_dispatched, event.action).inc()
            elif isinstance(event, TimerStarted):
                pending.append(await self._timer(execution, event.timer_id, event.step, event.due))
            elif isinstance(event, StepCompleted | StepAttemptFailed):
                self._count_attempt(after, event)
        if before.status != after.status:
            pending.append(await self._summary(after))
            self._count_execution(before, after)
        await self._publisher.wait(pending)

    async def republish(self, state: ExecutionState) -> None:
        """Re-send what may have been lost in a crash between append and publish."""
        pending: list[asyncio.Future[int]] = []
        execution = state.execution_id
        for key, step in state.steps.items():
            if step.status == "scheduled":
                pending.append(
                    await self._task(
                        execution,
                        key,
                        step.attempt,
                        step.iteration,
                        step.action,
                        step.input,
                        step.timeout,
                    )
                )
            elif step.status == "waiting" and step.timer_id and step.due is not None:
                pending.append(await self._timer(execution, step.timer_id, key, step.due))
        pending.append(await self._summary(state))
        await self._publisher.wait(pending)

    async def _task(
        self,
        execution: str,
        step: str,
        attempt: int,
        iteration: int,
        action: str,
        params: Any,
        step_timeout: float | None,
    ) -> asyncio.Future[int]:
        key = idempotency_key(execution, step, attempt, iteration)
        task = Task(
            execution_id=execution,
            step=step,
            attempt=attempt,
            iteration=iteration,
            action=action,
            input=params,
            timeout=step_timeout,
            idempotency_key=key,
            reply_to=inbox_subject(execution),
        )
        return await self._publisher.send(
            task_subject(action), json_encoder.encode(task), {"Nats-Msg-Id": key}
        )

    async def _timer(
        self, execution: str, timer: str, step: str, due: float
    ) -> asyncio.Future[int]:
        headers = {
            "Nats-Schedule": f"@at {_rfc3339(due)}",
            "Nats-Schedule-Target": inbox_subject(execution),
            "Nats-Msg-Id": f"timer:{execution}:{timer}",
        }
        body = json_encoder.encode(TimerDue(timer_id=timer, step=step))
        return await self._publisher.send(timer_subject(execution, timer), body, headers)

    async def _summary(self, state: ExecutionState) -> asyncio.Future[int]:
        summary = summary_of(state)
        return await self._publisher.send(
            f"$KV.{EXECUTIONS_BUCKET}.{state.execution_id}", json_encoder.encode(summary)
        )

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
