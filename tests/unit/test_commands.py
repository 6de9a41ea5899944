"""Commands are derived purely: a fresh decision's, and a redelivery's from the state."""

from __future__ import annotations

from hypothesis import given, settings

from natsflow.events.commands import (
    CancelTimers,
    DispatchTask,
    StartTimer,
    WriteSummary,
    commands_for,
    pending_commands,
    resend_commands,
)
from natsflow.events.fold import fold
from natsflow.events.model import (
    TERMINAL_EXECUTION,
    AnyEvent,
    ExecutionState,
    StepDeadlineSet,
    StepScheduled,
    TimerStarted,
)
from natsflow.events.views import summary_changed
from tests.unit.strategies import Run, simulated_runs


def _dispatches(commands: tuple[object, ...]) -> list[tuple[str, int, int]]:
    return [(c.step, c.attempt, c.iteration) for c in commands if isinstance(c, DispatchTask)]


def _decisions(run: Run) -> list[tuple[ExecutionState, ExecutionState, tuple[AnyEvent, ...]]]:
    out: list[tuple[ExecutionState, ExecutionState, tuple[AnyEvent, ...]]] = []
    state = ExecutionState(execution_id=run.execution_id)
    for batch in run.batches:
        after = fold(batch, state)
        out.append((state, after, batch))
        state = after
    return out


@settings(max_examples=150, deadline=None)
@given(simulated_runs())
def test_a_fresh_decision_sends_exactly_what_it_decided(run: Run) -> None:
    for before, after, batch in _decisions(run):
        commands = commands_for(before, after, batch)
        scheduled = [
            (e.step, e.attempt, e.iteration) for e in batch if isinstance(e, StepScheduled)
        ]
        assert _dispatches(commands) == scheduled
        timers = [e.timer_id for e in batch if isinstance(e, TimerStarted | StepDeadlineSet)]
        assert [c.timer_id for c in commands if isinstance(c, StartTimer)] == timers
        summaries = [c for c in commands if isinstance(c, WriteSummary)]
        assert len(summaries) == summary_changed(before, after)
        if after.status in TERMINAL_EXECUTION and before.status not in TERMINAL_EXECUTION:
            waiting = any(
                (s.status in ("waiting", "cancelled") and s.timer_id) or s.deadlines
                for s in after.steps.values()
            )
            assert len([c for c in commands if isinstance(c, CancelTimers)]) == waiting


@settings(max_examples=150, deadline=None)
@given(simulated_runs())
def test_a_redelivery_resends_what_is_still_pending_and_never_a_finished_step(run: Run) -> None:
    for _, after, batch in _decisions(run):
        pending = pending_commands(after)
        dispatched = _dispatches(pending)
        # never a completed (or otherwise finished) step
        for key, _, _ in dispatched:
            assert after.steps[key].status == "scheduled"
        if after.status == "running":
            expected = {
                (k, s.attempt, s.iteration)
                for k, s in after.steps.items()
                if s.status == "scheduled"
            }
            assert set(dispatched) == expected
            fresh = commands_for(ExecutionState(), after, batch)
            assert set(_dispatches(fresh)) <= set(dispatched), "a redelivery loses a task"
        else:
            assert not dispatched
            assert not [c for c in pending if isinstance(c, StartTimer)]
        assert [c.summary.status for c in pending if isinstance(c, WriteSummary)] == [after.status]


@settings(max_examples=150, deadline=None)
@given(simulated_runs())
def test_a_returning_message_resends_only_its_own_decision_and_only_what_still_waits(
    run: Run,
) -> None:
    decisions = _decisions(run)
    for index, (_, _, batch) in enumerate(decisions):
        # The message comes back now, or after any later decision was made.
        for _, later, _ in decisions[index:]:
            resent = resend_commands(batch, later)
            pending = pending_commands(later)
            assert set(_dispatches(resent)) <= set(_dispatches(pending))
            own = {(e.step, e.attempt, e.iteration) for e in batch if isinstance(e, StepScheduled)}
            assert set(_dispatches(resent)) <= own, "a task of another decision was resent"
            timers = {c.timer_id for c in resent if isinstance(c, StartTimer)}
            assert timers <= {c.timer_id for c in pending if isinstance(c, StartTimer)}
