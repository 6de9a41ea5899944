"""The manifest decider: what a DAG execution does next, as a pure function.

``ManifestDecider(workflow).react(state, message, now)`` turns one inbox
message into a ``Decision``: the events to append (the message's own facts, a
result or a timer, followed by the decisions they unlock) and the state after
them, folded once as the decisions are made. Time comes in as an argument;
nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from natsflow.events.decider import Decision
from natsflow.events.errors import ExpressionError
from natsflow.events.fold import evolve, fold
from natsflow.events.ids import child_execution_id
from natsflow.events.messages import AnyInbox
from natsflow.events.model import (
    TERMINAL_STEP,
    AnyEvent,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionState,
    SignalConsumed,
    StepCompleted,
    StepFannedOut,
    StepScheduled,
    StepSkipped,
    StepState,
    TimerStarted,
    WaitStarted,
)
from natsflow.manifests.actions import (
    ACTIONS,
    WAIT,
    WORKFLOW,
    ParamsError,
    SleepParams,
    WaitParams,
    WorkflowParams,
    runs_in_engine,
)
from natsflow.manifests.contracts import enforce_inputs
from natsflow.manifests.deadlines import deadlines_for
from natsflow.manifests.expressions import evaluate, render
from natsflow.manifests.facts import facts
from natsflow.manifests.resuming import first_attempt
from natsflow.manifests.schema import Step, Workflow
from natsflow.manifests.scope import (
    Scope,
    backoff,
    base_name,
    final_failure,
    timer_id,
    unwrap,
)

__all__ = ["ManifestDecider", "backoff", "base_name", "decide", "react", "timer_id"]


class ManifestDecider:
    """The decider of one manifest workflow version (see ``natsflow.events.decider``)."""

    __slots__ = ("workflow",)

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    def react(self, state: ExecutionState, message: AnyInbox, now: float) -> Decision:
        return react(state, self.workflow, message, now)


def react(state: ExecutionState, workflow: Workflow, message: AnyInbox, now: float) -> Decision:
    """Events for one inbox message (its facts, then the decisions they unlock), and the
    state after them.

    A message that changes nothing (a duplicate, a stale attempt's result, a
    message for a finished execution) gives no events.
    """
    brought = facts(state, workflow, message, now)
    if not brought:
        return Decision((), state)
    decision = decide(fold(brought, state), workflow, now)
    return Decision((*brought, *decision.events), decision.state)


def decide(state: ExecutionState, workflow: Workflow, now: float) -> Decision:
    """Every decision the state allows now, until nothing more follows, and the state after."""
    out: list[AnyEvent] = []
    # Each round settles at least one step, so the bound is never reached in practice.
    # It is recomputed each round: a fan-out adds steps (a chain of skipped items
    # settles one item per round).
    rounds = 0
    # Paused: results and timers are recorded (facts), but nothing new is decided.
    while (
        state.status == "running"
        and not state.paused
        and rounds < 4 * len(state.steps) + 2 * len(workflow.steps) + 4
    ):
        rounds += 1
        round_events = enforce_inputs(_decide_round(state, workflow, now), state, workflow, now)
        if not round_events:
            break
        for event in round_events:
            state = evolve(state, event)
        out.extend(round_events)
        if all(type(event) in _UNLOCKS_NOTHING for event in round_events):
            break  # dispatches and timers change no step's outcome: no further round can act
    return Decision(tuple(out), state)


_UNLOCKS_NOTHING = (StepScheduled, TimerStarted)
# Statuses a decision round has nothing to do for: waiting on a worker or a timer, or done.
_AT_REST = frozenset({"scheduled", "waiting", "completed", "skipped"})


def _decide_round(state: ExecutionState, workflow: Workflow, now: float) -> list[AnyEvent]:
    if handed := _hand_signals(state, now):
        return handed
    scope = Scope(state)
    out: list[AnyEvent] = []
    for name, spec in workflow.steps.items():
        step = state.steps.get(name)
        if step is None:
            out.extend(_start_if_ready(state, name, spec, scope, now))
        elif step.status in _AT_REST:
            continue
        elif step.status == "failed" and spec.on_failure == "fail":
            return [ExecutionFailed(at=now, error=f"step {name} failed: {step.error}", step=name)]
        elif step.status == "fanned_out":
            out.extend(_advance_fan_out(state, name, spec, step, scope, now))
        else:
            out.extend(_advance(name, spec, step, scope, now, first_attempt(state, name)))
    if out:
        return out
    if all(state.steps.get(n) and state.steps[n].status in TERMINAL_STEP for n in workflow.steps):
        try:
            output = render(workflow.output, scope.base())
        except ExpressionError as exc:
            return [ExecutionFailed(at=now, error=f"output: {exc}")]
        return [ExecutionCompleted(at=now, output=output)]
    return []


def _blocked_by(state: ExecutionState, spec: Step) -> tuple[bool, str | None]:
    """(ready, reason to skip): hard deps must complete, soft ones only finish.

    A hard dep that failed or was skipped skips the step at once, whatever the
    order of ``needs`` (as a fan-out child is skipped by a failed item).
    """
    for dep in spec.needs:
        dep_state = state.steps.get(dep)
        if dep_state is not None and dep_state.status in ("failed", "skipped"):
            return True, f"needs {dep}, which {dep_state.status}"
    for dep in (*spec.needs, *spec.after):
        dep_state = state.steps.get(dep)
        if dep_state is None or dep_state.status not in TERMINAL_STEP:
            return False, None
    return True, None


def _start_if_ready(
    state: ExecutionState, name: str, spec: Step, scope: Scope, now: float
) -> list[AnyEvent]:
    ready, skip_reason = _blocked_by(state, spec)
    if not ready:
        return []
    if skip_reason is not None:
        return [StepSkipped(at=now, step=name, reason=skip_reason)]
    fresh = StepState(status="pending")
    try:
        if spec.when is not None and not evaluate(unwrap(spec.when), scope.base()):
            return [StepSkipped(at=now, step=name, reason=f"when is false: {spec.when}")]
        if spec.for_each is not None:
            return [_fan_out(name, spec, scope.base(), now)]
        first = first_attempt(state, name)
        return _begin(name, spec, fresh, scope, now, attempt=first, iteration=0)
    except (ExpressionError, ValueError, TypeError) as exc:
        return [final_failure(name, 0, str(exc), _kind(exc), now)]


def _fan_out(name: str, spec: Step, scope: Mapping[str, Any], now: float) -> StepFannedOut:
    assert spec.for_each is not None
    fe = spec.for_each
    items = evaluate(unwrap(fe.items), scope)
    if not isinstance(items, list | tuple):
        raise ValueError(f"for_each.items must be a list, got {type(items).__name__}")
    keys: list[str] = []
    for index, item in enumerate(items):
        key = index if fe.key is None else evaluate(unwrap(fe.key), {**scope, "item": item})
        keys.append(str(key))
    if len(set(keys)) != len(keys):
        raise ValueError(f"for_each.key gives duplicate keys: {keys}")
    known = set(keys)

    def item_keys(field: str, expression: str | None, item: Any) -> tuple[str, ...]:
        deps = [] if expression is None else evaluate(unwrap(expression), {**scope, "item": item})
        deps = list(deps or [])
        unknown = [str(d) for d in deps if str(d) not in known]
        if unknown:
            raise ValueError(f"for_each.{field} names unknown item keys {unknown}")
        return tuple(f"{name}[{d}]" for d in deps)

    needs = tuple(item_keys("needs", fe.needs, item) for item in items)
    after = tuple(item_keys("after", fe.after, item) for item in items)
    return StepFannedOut(
        at=now,
        step=name,
        keys=tuple(f"{name}[{k}]" for k in keys),
        items=tuple(items),
        needs=needs,
        # Left out when no item has one: histories without ``after`` stay as they were.
        after=after if any(after) else (),
    )


def _begin(
    key: str,
    spec: Step,
    step: StepState,
    scope: Scope,
    now: float,
    *,
    attempt: int,
    iteration: int,
) -> list[AnyEvent]:
    """Dispatch an attempt, or carry out an engine action (``sleep``: a durable timer)."""
    # The scope is built only when there is something to render.
    params = render(spec.with_, scope.for_step(step, iteration)) if spec.with_ else {}
    if runs_in_engine(spec.action):
        # The rendered params are checked as a worker checks its own (ParamsError).
        match ACTIONS[spec.action].convert(params):
            case SleepParams(duration=seconds):
                tid = timer_id(key, "sleep", iteration, attempt)
                due = now + seconds
                return [TimerStarted(at=now, timer_id=tid, step=key, due=due, purpose="sleep")]
            case WaitParams():
                return _begin_wait(key, spec, params, now, attempt, iteration)
            case WorkflowParams(workflow=child_workflow, input=child_input):
                child = step.child if step.iteration == iteration else None
                if child is None:
                    # A fresh child only at a run's first attempt (1, or the next after those
                    # a resume kept: a step run afresh then needs a child that can run); a
                    # retry, also one a resume took on, keeps the step's child.
                    child = child_execution_id(scope.execution_id, key, iteration, attempt - 1)
                rendered = {"workflow": child_workflow, "input": child_input}
                return [
                    StepScheduled(
                        at=now,
                        step=key,
                        attempt=attempt,
                        iteration=iteration,
                        action=WORKFLOW.name,
                        input=rendered,
                        timeout=spec.timeout,
                        child=child,
                    )
                ]
            case other:  # pragma: no cover - each engine action has its case above
                raise AssertionError(f"no engine case for {spec.action}: {other!r}")
    return [
        StepScheduled(
            at=now,
            step=key,
            attempt=attempt,
            iteration=iteration,
            action=spec.action,
            input=params,
            timeout=spec.timeout,
        ),
        *deadlines_for(key, spec, now, attempt=attempt, iteration=iteration),
    ]


def _kind(exc: Exception) -> str:
    """The error kind of a step that could not begin: its rendered ``with`` does not fit
    the action (as a worker would say), or a template could not be evaluated."""
    return "bad_params" if isinstance(exc, ParamsError) else "expression"


def _advance(
    key: str, spec: Step, step: StepState, scope: Scope, now: float, first: int = 1
) -> list[AnyEvent]:
    """Move a started step (or fan-out child) on when a timer or loop allows it; ``first``
    is the number of an iteration's first attempt (1 unless a resume numbered on)."""

    def begin(attempt: int, iteration: int) -> list[AnyEvent]:
        return _begin(key, spec, step, scope, now, attempt=attempt, iteration=iteration)

    try:
        if step.status == "ready":
            if spec.action == WAIT.name:  # its timeout fired before an answer
                return [_wait_timed_out(key, spec, step, now)]
            if runs_in_engine(spec.action) and spec.action != WORKFLOW.name:  # its timer fired
                return [StepCompleted(at=now, step=key, attempt=0, output=None)]
            last_failed = bool(step.attempts) and step.attempts[-1].error is not None
            if last_failed:
                return begin(step.attempt + 1, step.iteration)
            return begin(first, step.iteration + 1)
        if step.status == "looping":
            assert spec.repeat is not None
            if spec.repeat.sleep > 0:
                tid = timer_id(key, "repeat", step.iteration + 1, first - 1)
                due = now + spec.repeat.sleep
                return [TimerStarted(at=now, timer_id=tid, step=key, due=due, purpose="repeat")]
            return begin(first, step.iteration + 1)
    except (ExpressionError, ValueError, TypeError) as exc:
        return [final_failure(key, step.attempt, str(exc), _kind(exc), now, step.iteration)]
    return []


def _advance_fan_out(
    state: ExecutionState, name: str, spec: Step, parent: StepState, scope: Scope, now: float
) -> list[AnyEvent]:
    out: list[AnyEvent] = []
    children = [state.steps[k] for k in parent.children]
    limit = spec.for_each.concurrency if spec.for_each else None
    running = sum(1 for c in children if c.status not in TERMINAL_STEP and c.status != "pending")
    for key, child in zip(parent.children, children, strict=True):
        if child.status == "pending":
            deps = [state.steps[d] for d in child.item_needs]
            later = [state.steps[d] for d in child.item_after]
            broken = [
                (d, s.status)
                for d, s in zip(child.item_needs, deps, strict=True)
                if s.status in ("failed", "skipped")
            ]
            if broken:
                dep, status = broken[0]
                out.append(StepSkipped(at=now, step=key, reason=f"needs {dep}, which {status}"))
            elif (
                all(d.status == "completed" for d in deps)
                and all(d.status in TERMINAL_STEP for d in later)
                and (limit is None or running < limit)
            ):
                running += 1
                try:
                    number = first_attempt(state, key)
                    out.extend(_begin(key, spec, child, scope, now, attempt=number, iteration=0))
                except (ExpressionError, ValueError, TypeError) as exc:
                    out.append(final_failure(key, 0, str(exc), _kind(exc), now))
        else:
            out.extend(_advance(key, spec, child, scope, now, first_attempt(state, key)))
    if out:
        return out
    if all(c.status in TERMINAL_STEP for c in children):
        failed = [
            (k, c)
            for k, c in zip(parent.children, children, strict=True)
            if c.status != "completed"
        ]
        if not failed:
            return [
                StepCompleted(at=now, step=name, attempt=0, output=[c.output for c in children])
            ]
        first_key, first = failed[0]
        error = (
            f"{len(failed)} of {len(children)} items did not complete; {first_key}: {first.error}"
        )
        return [final_failure(name, 0, error, "for_each", now)]
    return []


# --- wait: for a signal or a message on a subject ------------------------------


def _begin_wait(
    key: str, spec: Step, params: Any, now: float, attempt: int, iteration: int
) -> list[AnyEvent]:
    """The wait begins; its timeout (the step's ``timeout``) is a durable timer. A signal
    kept already is handed over by the next round (``_hand_signals``)."""
    wait = WAIT.convert(params)
    out: list[AnyEvent] = [
        WaitStarted(at=now, step=key, signal=wait.signal, subject=wait.subject, input=params)
    ]
    if spec.timeout is not None:
        tid = timer_id(key, "wait", iteration, attempt)
        due = now + spec.timeout
        out.append(TimerStarted(at=now, timer_id=tid, step=key, due=due, purpose="wait"))
    return out


def _hand_signals(state: ExecutionState, now: float) -> list[AnyEvent]:
    """Each waiting step gets the oldest kept signal of its name (steps in the order they
    were first known, one signal each), which completes it with the signal's data."""
    if not state.signals:
        return []  # nothing kept to hand over: no scan of the steps
    taken: dict[str, int] = {}
    out: list[AnyEvent] = []
    for key, step in state.steps.items():
        name = step.wait_signal
        if name is None or step.status != "waiting":
            continue
        kept = state.signals.get(name, ())
        index = taken.get(name, 0)
        if index < len(kept):
            taken[name] = index + 1
            signal = kept[index]
            out.append(SignalConsumed(at=now, name=name, step=key, signal_id=signal.signal_id))
            out.append(StepCompleted(at=now, step=key, attempt=0, output=signal.data))
    return out


def _wait_timed_out(key: str, spec: Step, step: StepState, now: float) -> AnyEvent:
    """A wait's timeout took its declared path: ``continue`` with the default output, or
    a final failure of kind ``timeout``."""
    wait = WAIT.convert(step.input)
    if wait.on_timeout == "continue":
        return StepCompleted(at=now, step=key, attempt=0, output=wait.default)
    awaited = f"signal {wait.signal!r}" if wait.signal is not None else f"subject {wait.subject!r}"
    error = f"waited {spec.timeout:g}s for {awaited}: timed out"
    return final_failure(key, 0, error, "timeout", now, step.iteration)
