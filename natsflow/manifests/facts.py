"""The facts an inbox message brings: a start, a result, progress, a timer, a cancel.

``facts(state, workflow, message, now)`` is the first half of a decision: the
events that record what happened (``step_completed``, ``timer_fired``, ...),
before the decider works out what they unlock. A message that changes nothing
(a duplicate, a stale attempt's result, a message for a finished execution)
gives no facts.
"""

from __future__ import annotations

from natsflow.events.errors import ExpressionError
from natsflow.events.ids import is_routed_child
from natsflow.events.messages import (
    AnyInbox,
    Cancel,
    ChildEnded,
    ErrorInfo,
    Pause,
    Progress,
    Result,
    Resume,
    Signal,
    Start,
    TimerDue,
    Unpause,
)
from natsflow.events.model import (
    AnyEvent,
    ExecutionCancelled,
    ExecutionStarted,
    ExecutionState,
    SignalReceived,
    StepAttemptFailed,
    StepCompleted,
    StepProgressed,
    StepState,
    TimerFired,
    TimerStarted,
    awaits_result,
)
from natsflow.manifests.contracts import checked_output
from natsflow.manifests.deadlines import heartbeat_moved, missed, missed_result
from natsflow.manifests.expressions import evaluate
from natsflow.manifests.resuming import pause_facts, resume_facts, retry_budget_used
from natsflow.manifests.schema import Workflow
from natsflow.manifests.scope import Scope, backoff, base_name, final_failure, timer_id, unwrap


def facts(
    state: ExecutionState, workflow: Workflow, message: AnyInbox, now: float
) -> tuple[AnyEvent, ...]:
    match message:
        case Start():
            if state.status != "pending":
                return ()
            return (
                ExecutionStarted(
                    at=now,
                    execution_id=state.execution_id,
                    workflow=message.workflow,
                    version=message.version,
                    input=message.input,
                    idempotency_key=message.idempotency_key,
                    trigger=message.trigger,
                    parent=message.parent,
                ),
            )
        case Cancel():
            if state.status != "running":
                return ()
            return (ExecutionCancelled(at=now, reason=message.reason),)
        case Resume():
            return resume_facts(state, workflow, message, now)
        case Pause() | Unpause():
            return pause_facts(state, message, now)
        case _ if state.status != "running":
            return ()
        case Result():
            if not awaits_result(state, message.step, message.attempt, message.iteration):
                return ()
            step = state.steps[message.step]
            message = checked_output(workflow, step.action, message)  # a custom action's
            if message.ok:
                return _completion(state, workflow, message, step, now)
            used = retry_budget_used(state, message.step, message.attempt)
            return _failure(workflow, message, step, now, used)
        case Progress():
            if not awaits_result(state, message.step, message.attempt, message.iteration):
                return ()
            step = state.steps[message.step]
            spec = workflow.steps[base_name(message.step)]
            # any report, even one that says nothing new, keeps a heartbeat alive
            moved = heartbeat_moved(message.step, spec, step, now)
            if step.progress == message.message:
                return moved  # a re-delivery, or a report that says nothing new
            return (
                StepProgressed(
                    at=now,
                    step=message.step,
                    attempt=message.attempt,
                    iteration=message.iteration,
                    message=message.message,
                ),
                *moved,
            )
        case ChildEnded():
            result = _child_result(state, message)
            if result is None:
                return ()
            step = state.steps[message.step]
            if result.ok:
                return _completion(state, workflow, result, step, now)
            used = retry_budget_used(state, message.step, result.attempt)
            return _failure(workflow, result, step, now, used)
        case TimerDue():
            waiting = state.steps.get(message.step)
            deadline = missed(waiting, message.timer_id) if waiting is not None else None
            if waiting is not None and deadline is not None:
                spec = workflow.steps[base_name(message.step)]
                result = missed_result(message.step, spec, waiting, deadline)
                used = retry_budget_used(state, message.step, result.attempt)
                return _failure(workflow, result, waiting, now, used)
            if waiting is None or waiting.timer_id != message.timer_id:
                return ()
            return (TimerFired(at=now, timer_id=message.timer_id, step=message.step),)
        case Signal():
            return _signal(state, message, now)
    return ()


def _signal(state: ExecutionState, message: Signal, now: float) -> tuple[AnyEvent, ...]:
    """A named signal is kept (the decider hands it to a wait); a message heard on a
    waited subject completes that step at once, if it still waits."""
    received = SignalReceived(
        at=now, name=message.name, data=message.data, signal_id=message.id, step=message.step
    )
    if message.step is None:
        kept = state.signals.get(message.name, ())
        if message.id and any(s.signal_id == message.id for s in kept):
            return ()  # sent again while still kept: counted once
        return (received,)
    step = state.steps.get(message.step)
    if step is None or step.status != "waiting" or step.wait_subject is None:
        return ()  # heard after the wait ended (answered or timed out): nobody waits
    done = StepCompleted(at=now, step=message.step, attempt=0, output=message.data)
    return (received, done)


def _completion(
    state: ExecutionState, workflow: Workflow, message: Result, step: StepState, now: float
) -> tuple[AnyEvent, ...]:
    spec = workflow.steps[base_name(message.step)]
    done = StepCompleted(
        at=now,
        step=message.step,
        attempt=message.attempt,
        iteration=message.iteration,
        output=message.output,
    )
    if spec.repeat is None or step.parent is not None:
        return (done,)
    # ``until`` judges the output just produced: here ``loop`` is this iteration's.
    scope = {
        **Scope(state).for_step(step),
        "loop": {"output": message.output, "iteration": message.iteration},
        "output": message.output,
    }
    try:
        finished = bool(evaluate(unwrap(spec.repeat.until), scope))
    except ExpressionError as exc:
        return (
            final_failure(
                message.step, message.attempt, str(exc), "expression", now, message.iteration
            ),
        )
    if finished:
        return (done,)
    limit = spec.repeat.max_iterations
    if limit is not None and message.iteration + 1 >= limit:
        return (
            final_failure(
                message.step,
                message.attempt,
                f"repeat.until still false after max_iterations={limit}",
                "max_iterations",
                now,
                message.iteration,
            ),
        )
    return (
        StepCompleted(
            at=now,
            step=message.step,
            attempt=message.attempt,
            iteration=message.iteration,
            output=message.output,
            final=False,
        ),
    )


def _failure(
    workflow: Workflow, message: Result, step: StepState, now: float, used: int
) -> tuple[AnyEvent, ...]:
    """``used``: the attempt's place in the retry budget (its number, unless a resume
    numbered its attempts on from earlier ones)."""
    error = message.error
    text = error.message if error else "step failed without an error message"
    kind = error.kind if error else "error"
    policy = workflow.steps[base_name(message.step)].retry
    retry = (
        (error is None or error.retryable)
        and used < policy.attempts
        and (not policy.on or kind in policy.on)
    )
    if not retry:
        return (final_failure(message.step, message.attempt, text, kind, now, message.iteration),)
    due = now + backoff(policy, used, error.retry_after if error else None)
    tid = timer_id(message.step, "retry", message.iteration, message.attempt)
    return (
        StepAttemptFailed(
            at=now,
            step=message.step,
            attempt=message.attempt,
            iteration=message.iteration,
            error=text,
            kind=kind,
            retry_at=due,
        ),
        TimerStarted(at=now, timer_id=tid, step=message.step, due=due, purpose="retry"),
    )


def _child_result(state: ExecutionState, message: ChildEnded) -> Result | None:
    """A child's end as the result of the ``workflow`` step waiting for it; None if no
    attempt waits for that child (a copy, a step finished meanwhile, another iteration).

    A child that failed or was cancelled fails the step without a retry: a retry would
    meet the same child (its id is the step's). One that could not start says itself
    whether trying again may help (a deploy may come meanwhile).
    """
    step = state.steps.get(message.step)
    if step is None or step.child is None or not is_routed_child(step.child, message.child):
        return None
    attempt = message.attempt if message.attempt is not None else step.attempt
    if not awaits_result(state, message.step, attempt, step.iteration):
        return None
    error = message.error
    if message.status != "completed" and error is None:
        text = f"child {message.child} {message.status}"
        error = ErrorInfo(message=text, kind=f"child_{message.status}", retryable=False)
    return Result(
        step=message.step,
        attempt=attempt,
        iteration=step.iteration,
        ok=message.status == "completed",
        output=message.output,
        error=error,
    )
