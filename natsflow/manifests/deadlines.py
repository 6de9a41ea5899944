"""Deadlines the engine keeps for an attempt: its ``timeout`` and its ``heartbeat``.

A worker enforces a step's ``timeout`` itself, but one that crashes silently,
acks its task and never answers, or does not enforce it at all would strand
the execution. So when an attempt is dispatched the decider also records a
``StepDeadlineSet``: a durable timer due at the timeout plus a grace (the
worker's own timeout should win the race). A step with a ``heartbeat`` gets a
second deadline, moved on by the worker's progress reports. If a deadline's
timer fires while its attempt is still awaited, the attempt fails with kind
``timeout`` or ``heartbeat`` and is retried as the step's ``retry`` says; a
result for that attempt arriving later is stale and ignored.

Pure, like the rest of the decider.
"""

from __future__ import annotations

from natsflow.events.messages import ErrorInfo, Result
from natsflow.events.model import Deadline, StepDeadlineSet, StepState
from natsflow.manifests.schema import Step
from natsflow.manifests.scope import timer_id

# The engine's deadline trails the worker's timeout by this much (at least a second).
GRACE_FRACTION = 0.1
MIN_GRACE = 1.0


def grace(timeout: float) -> float:
    """How long after ``timeout`` the engine's own deadline falls."""
    return max(MIN_GRACE, GRACE_FRACTION * timeout)


def deadlines_for(
    key: str, spec: Step, now: float, *, attempt: int, iteration: int
) -> list[StepDeadlineSet]:
    """The deadlines of an attempt dispatched at ``now``."""
    out: list[StepDeadlineSet] = []
    if spec.timeout is not None:
        out.append(
            StepDeadlineSet(
                at=now,
                step=key,
                attempt=attempt,
                iteration=iteration,
                timer_id=timer_id(key, "deadline", iteration, attempt),
                due=now + spec.timeout + grace(spec.timeout),
                kind="timeout",
            )
        )
    if spec.heartbeat is not None:
        out.append(_heartbeat(key, attempt, iteration, now + spec.heartbeat, now))
    return out


def heartbeat_moved(
    key: str, spec: Step, step: StepState, now: float
) -> tuple[StepDeadlineSet, ...]:
    """A progress report at ``now``: the heartbeat deadline moved on, when it must.

    Progress may come every half second; recording each would grow the history
    without need. The deadline moves only once half its period has gone by, so
    an attempt records at most about two moves per period, and a silent worker
    is still caught between one and one and a half periods after its last report.
    """
    if spec.heartbeat is None:
        return ()
    current = _kept(step, "heartbeat")
    if current is not None and current.due - now > spec.heartbeat / 2:
        return ()
    return (_heartbeat(key, step.attempt, step.iteration, now + spec.heartbeat, now),)


def _heartbeat(key: str, attempt: int, iteration: int, due: float, now: float) -> StepDeadlineSet:
    # A new id per move (the due time in ms): the previous timer then fires into nothing.
    base = timer_id(key, "heartbeat", iteration, attempt)
    return StepDeadlineSet(
        at=now,
        step=key,
        attempt=attempt,
        iteration=iteration,
        timer_id=f"{base}/{round(due * 1000)}",
        due=due,
        kind="heartbeat",
    )


def _kept(step: StepState, kind: str) -> Deadline | None:
    return next((d for d in step.deadlines if d.kind == kind), None)


def missed(step: StepState, timer: str) -> Deadline | None:
    """The deadline of ``step``'s attempt in flight that ``timer`` is, if any."""
    if step.status != "scheduled":
        return None
    return next((d for d in step.deadlines if d.timer_id == timer), None)


def missed_result(key: str, spec: Step, step: StepState, deadline: Deadline) -> Result:
    """What a missed deadline amounts to: the attempt failed, retryable, with its kind."""
    if deadline.kind == "heartbeat":
        text = f"step {key} attempt {step.attempt}: no progress for {spec.heartbeat}s (heartbeat)"
    else:
        text = (
            f"step {key} attempt {step.attempt}: no result within its timeout of {spec.timeout}s"
            f" (the engine's deadline, {grace(spec.timeout or 0):g}s after it)"
        )
    return Result(
        step=key,
        attempt=step.attempt,
        iteration=step.iteration,
        ok=False,
        error=ErrorInfo(message=text, kind=deadline.kind, retryable=True),
    )
