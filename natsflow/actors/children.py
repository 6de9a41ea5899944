"""Child executions: the effects of the ``workflow`` action and of a child's end.

A ``workflow`` step's child has an id derived from the parent's id and the step
key (``natsflow.events.ids.child_execution_id``), so every message here is
idempotent: a ``Start`` carries ``Nats-Msg-Id: start:<child>``, a cancel
``cancel:<child>``, a child's report ``ended:<child>:<events>`` (one per ending).

- ``start``: start the child through the start use case (pinning its latest
  version, checking ``enabled`` and its input). One that cannot start is
  reported to the parent's inbox as ``child_ended`` with status ``not_started``,
  so the step fails (or retries) with the reason instead of waiting forever. A
  child that exists and has ended already (the step started again, e.g. by a
  resume) is reported again from its history, for the attempt that asked.
- ``notify``: a child that ended tells its parent (``child_ended``).
- ``cancel``: a parent that ended cancels a child still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.topology import inbox_subject
from natsflow.actors.starter import Starter
from natsflow.events.commands import CancelChild, NotifyParent, StartChild
from natsflow.events.errors import InputError, InvalidInput, NotFound
from natsflow.events.messages import Cancel, ChildEnded, ErrorInfo, json_encoder
from natsflow.events.model import TERMINAL_EXECUTION, ExecutionState, ParentLink


class Children:
    """Carries out the commands that link a parent execution and its children."""

    def __init__(
        self,
        starter: Starter,
        publisher: Publisher,
        load: Callable[[str], Awaitable[ExecutionState]],
    ) -> None:
        self._starter = starter
        self._publisher = publisher
        self._load = load

    async def start(self, command: StartChild) -> asyncio.Future[int] | None:
        """Start the child; a future for a report to the parent when there is one to send."""
        parent = ParentLink(execution_id=command.execution_id, step=command.step)
        try:
            started = await self._starter.start_child(
                command.workflow, command.input, command.child, parent
            )
        except InvalidInput as exc:
            problems = "; ".join(exc.problems) if exc.problems else ""
            text = f"{exc}: {problems}" if problems else str(exc)
            return await self._not_started(command, text, "child_invalid_input", retryable=False)
        except (NotFound, InputError) as exc:
            # Not deployed or disabled: a deploy may come while a retry waits.
            return await self._not_started(command, str(exc), "child_not_started", retryable=True)
        if started.created:
            return None
        child = await self._load(started.execution_id)  # a code app's child: routed to it
        if child.status not in TERMINAL_EXECUTION:
            return None  # running: it reports when it ends
        error = None
        if child.status != "completed":
            text = f"{started.execution_id} {child.status}: {child.error}"
            error = ErrorInfo(message=text, kind=f"child_{child.status}", retryable=False)
        report = ChildEnded(
            step=command.step,
            child=started.execution_id,
            status=child.status,
            output=child.output,
            error=error,
            attempt=command.attempt,
        )
        msg_id = f"ended:{command.child}:{command.iteration}:{command.attempt}"
        return await self._send(command.execution_id, report, msg_id)

    async def _not_started(
        self, command: StartChild, text: str, kind: str, *, retryable: bool
    ) -> asyncio.Future[int]:
        report = ChildEnded(
            step=command.step,
            child=command.child,
            status="not_started",
            error=ErrorInfo(
                message=f"child workflow {command.workflow!r} not started: {text}",
                kind=kind,
                retryable=retryable,
            ),
            attempt=command.attempt,
        )
        msg_id = f"not-started:{command.child}:{command.iteration}:{command.attempt}"
        return await self._send(command.execution_id, report, msg_id)

    async def notify(self, command: NotifyParent) -> asyncio.Future[int]:
        """Tell the parent how its child (``command.execution_id``) ended."""
        error = None
        if command.status != "completed":
            text = command.error or f"{command.execution_id} {command.status}"
            error = ErrorInfo(message=text, kind=f"child_{command.status}", retryable=False)
        report = ChildEnded(
            step=command.parent.step,
            child=command.execution_id,
            status=command.status,
            output=command.output,
            error=error,
        )
        msg_id = f"ended:{command.execution_id}:{command.events}"
        return await self._send(command.parent.execution_id, report, msg_id)

    async def cancel(self, command: CancelChild) -> asyncio.Future[int]:
        """Cancel a child still running (one that ended meanwhile ignores it)."""
        body = json_encoder.encode(Cancel(reason=command.reason))
        child = await self._starter.routed_child(command.child, command.workflow)
        return await self._publisher.send(
            inbox_subject(child), body, {"Nats-Msg-Id": f"cancel:{child}"}
        )

    async def _send(self, execution: str, report: ChildEnded, msg_id: str) -> asyncio.Future[int]:
        body = json_encoder.encode(report)
        return await self._publisher.send(inbox_subject(execution), body, {"Nats-Msg-Id": msg_id})
