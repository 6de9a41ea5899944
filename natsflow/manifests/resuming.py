"""Resume, pause and unpause: the facts these operator messages bring, pure like the decider.

``resume`` takes a failed execution on from where it failed: every step that did
not complete runs again (the failed one, those skipped because of it, fan-out
items that failed or were skipped, anything still in flight when it failed);
completed steps keep their outputs and never run again. ``from_step`` also re-runs
a named step and everything that depends on it, through ``needs`` and ``after``,
even completed. Attempts are numbered after the ones used before (recorded in
``ExecutionResumed.attempts_before``), so a handler's idempotency key never
repeats, and each re-run step gets its full retry budget again.

``pause`` stops decisions, not facts: results of running steps, progress and
timers are still recorded, but nothing new is dispatched (``decide`` does nothing
while paused) until ``unpause``, which decides on everything they unlocked.
"""

from __future__ import annotations

from natsflow.events.messages import Pause, Resume, Unpause
from natsflow.events.model import (
    AnyEvent,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionState,
    ExecutionUnpaused,
    StepState,
)
from natsflow.manifests.schema import Workflow
from natsflow.manifests.scope import base_name


def first_attempt(state: ExecutionState, key: str) -> int:
    """The number of a step's first attempt: 1, or the next after those a resume kept."""
    return state.attempts_before.get(key, 0) + 1


def retry_budget_used(state: ExecutionState, key: str, attempt: int) -> int:
    """How many attempts of its retry budget ``attempt`` is, counted since the last resume."""
    return attempt - state.attempts_before.get(key, 0)


def unknown_step(workflow: Workflow, step: str) -> str | None:
    """Why ``step`` cannot be resumed from in ``workflow``; None if it can."""
    if step in workflow.steps:
        return None
    return f"from_step: no step {step!r} in workflow {workflow.name} (its steps: " + (
        ", ".join(workflow.steps) + ")"
    )


def dependants(workflow: Workflow, step: str) -> list[str]:
    """``step`` and every step that depends on it through ``needs`` or ``after``,
    transitively, in the workflow's order."""
    reached = {step}
    changed = True
    while changed:
        changed = False
        for name, spec in workflow.steps.items():
            if name not in reached and reached & {*spec.needs, *spec.after}:
                reached.add(name)
                changed = True
    return [name for name in workflow.steps if name in reached]


def resume_facts(
    state: ExecutionState, workflow: Workflow, message: Resume, now: float
) -> tuple[AnyEvent, ...]:
    """``execution_resumed`` for a failed execution; nothing otherwise (or for an unknown
    ``from_step``: the admin API refuses both before they are sent)."""
    if state.status != "failed":
        return ()
    if message.from_step is not None and unknown_step(workflow, message.from_step):
        return ()
    forced = set(dependants(workflow, message.from_step)) if message.from_step else set()
    retried: list[str] = []
    rerun: list[str] = []
    reopened: list[str] = []
    before: dict[str, int] = {}
    for key, step in state.steps.items():
        if step.parent is not None and step.parent in forced:
            before[key] = _used(state, workflow, key, step)  # forgotten with its parent
        elif key in forced:
            rerun.append(key)
            before[key] = _used(state, workflow, key, step)
        elif step.status == "completed":
            continue
        elif step.children:
            reopened.append(key)
        elif step.status == "failed" and _failed_attempt(step):
            retried.append(key)
            before[key] = step.attempt
        else:
            rerun.append(key)
            before[key] = _used(state, workflow, key, step)
    before = {k: v for k, v in before.items() if v != state.attempts_before.get(k, 0)}
    return (
        ExecutionResumed(
            at=now,
            retried=tuple(retried),
            rerun=tuple(rerun),
            reopened=tuple(reopened),
            attempts_before=before,
            from_step=message.from_step,
        ),
    )


def _failed_attempt(step: StepState) -> bool:
    """Whether ``step`` ended with a dispatched attempt that failed (it goes on from it)."""
    return step.attempt > 0 and bool(step.attempts) and step.attempts[-1].error is not None


def _used(state: ExecutionState, workflow: Workflow, key: str, step: StepState) -> int:
    """The highest attempt number ``step`` may have used (in a task's idempotency key or a
    timer's id): the next run numbers its attempts after it."""
    before = state.attempts_before.get(key, 0)
    if step.attempt == 0 and step.started_at is None:
        return before  # never dispatched (skipped, or failed before it could begin)
    used = max(step.attempt, before + 1)  # a sleep's timer is numbered ``before + 1``
    spec = workflow.steps.get(base_name(key))
    if spec is not None and spec.repeat is not None and step.parent is None:
        # Each iteration numbers its attempts from ``before + 1``; only the last is known.
        used = max(used, before + spec.retry.attempts)
    return used


def pause_facts(
    state: ExecutionState, message: Pause | Unpause, now: float
) -> tuple[AnyEvent, ...]:
    """``execution_paused`` / ``execution_unpaused`` for a running execution that is not
    in that state already; nothing otherwise."""
    if state.status != "running":
        return ()
    if isinstance(message, Pause):
        return () if state.paused else (ExecutionPaused(at=now, reason=message.reason),)
    return (ExecutionUnpaused(at=now),) if state.paused else ()
