"""``show`` tells the whole story: every planned step, with its status and the reason for it."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from msgspec.structs import replace

from natsflow.events.fold import fold
from natsflow.events.model import (
    TERMINAL_EXECUTION,
    AnyEvent,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionState,
    StepAttemptFailed,
    StepCompleted,
    StepFannedOut,
    StepProgressed,
    StepScheduled,
    StepSkipped,
    StepState,
)
from natsflow.events.plan import PlannedStep, execution_error, short_name, tell
from natsflow.events.views import ExecutionView, execution_view
from natsflow.manifests.decider import decide
from natsflow.manifests.loader import parse_manifest
from natsflow.service.operations import plan_of
from tests.unit.strategies import Run, simulated_runs

# a -> b -> c (needs), d after a (soft), e on its own
PLAN = (
    PlannedStep(name="a", action="noop"),
    PlannedStep(name="b", action="shell", needs=("a",)),
    PlannedStep(name="c", action="noop", needs=("b",)),
    PlannedStep(name="d", action="noop", after=("a",)),
    PlannedStep(name="e", action="http"),
)
START = ExecutionStarted(at=1.0, execution_id="ex-1", workflow="w", version="v1")


def view(events: list[AnyEvent], plan: tuple[PlannedStep, ...] = PLAN) -> ExecutionView:
    return execution_view(fold(events), 7, len(plan), plan=plan)


def statuses(shown: ExecutionView) -> dict[str, tuple[str, str | None]]:
    return {key: (step.status, step.reason) for key, step in shown.steps.items()}


def test_steps_not_begun_are_pending_with_what_they_wait_for() -> None:
    shown = view([START, StepScheduled(at=2.0, step="a", attempt=1, action="noop")])
    assert statuses(shown) == {
        "a": ("scheduled", None),
        "b": ("pending", "waits for a"),
        "c": ("pending", "waits for b"),
        "d": ("pending", "waits for a"),
        "e": ("pending", None),
    }
    # a planned step not begun has its action from the plan, and nothing else yet
    assert (shown.steps["b"].action, shown.steps["b"].attempts) == ("shell", ())
    assert list(shown.steps) == ["a", "b", "c", "d", "e"]


def test_a_step_whose_worker_reports_progress_is_running() -> None:
    events: list[AnyEvent] = [START, StepScheduled(at=2.0, step="a", attempt=1, action="noop")]
    events.append(StepProgressed(at=3.0, step="a", attempt=1, message="50%"))
    shown = view(events)
    assert (shown.steps["a"].status, shown.steps["a"].progress) == ("running", "50%")
    # a retry is scheduled again, and is no longer running until it reports progress
    events.append(StepAttemptFailed(at=4.0, step="a", attempt=1, error="x", retry_at=5.0))
    events.append(StepScheduled(at=5.0, step="a", attempt=2, action="noop"))
    assert view(events).steps["a"].status == "scheduled"


def test_dependants_of_the_step_that_failed_the_execution_are_blocked() -> None:
    events: list[AnyEvent] = [
        START,
        StepScheduled(at=2.0, step="a", attempt=1, action="noop"),
        StepAttemptFailed(at=3.0, step="a", attempt=1, error="disk full"),
        ExecutionFailed(at=3.0, step="a", error="step a failed: disk full"),
    ]
    shown = view(events)
    assert statuses(shown) == {
        "a": ("failed", None),
        "b": ("blocked", "a failed"),
        "c": ("blocked", "a failed (via b)"),
        "d": ("not_run", "the execution failed at a before it began"),
        "e": ("not_run", "the execution failed at a before it began"),
    }
    assert shown.error == "step a failed: disk full"
    assert shown.failed_step == "a"


def test_steps_the_decider_skipped_for_a_failed_dependency_are_blocked() -> None:
    events: list[AnyEvent] = [
        START,
        StepScheduled(at=2.0, step="a", attempt=1, action="noop"),
        StepAttemptFailed(at=3.0, step="a", attempt=1, error="disk full"),
        StepSkipped(at=3.0, step="b", reason="needs a, which failed"),
        StepSkipped(at=3.0, step="c", reason="needs b, which skipped"),
    ]
    shown = view(events)
    assert statuses(shown)["b"] == ("blocked", "a failed")
    assert statuses(shown)["c"] == ("blocked", "a failed (via b)")
    assert shown.steps["b"].error == "needs a, which failed"  # the fold's words stay
    assert statuses(shown)["d"] == ("pending", None)  # soft: a finished, so d may run


def test_a_step_skipped_by_its_condition_is_skipped_with_the_reason() -> None:
    events: list[AnyEvent] = [
        START,
        StepSkipped(at=2.0, step="a", reason="when is false: ${{ false }}"),
        StepSkipped(at=2.0, step="b", reason="needs a, which skipped"),
    ]
    told = statuses(view(events))
    assert told["a"] == ("skipped", "when is false: ${{ false }}")
    assert told["b"] == ("skipped", "needs a, which skipped")
    assert told["c"] == ("pending", None)  # b is done: the decider skips c next


FAN_PLAN = (
    PlannedStep(name="load", action="noop"),
    PlannedStep(name="sync", action="workflow", needs=("load",)),
    PlannedStep(name="report", action="noop", needs=("sync",)),
)
ENTITIES = ("campus", "household", "person", "address")


def fanned_out() -> list[AnyEvent]:
    keys = tuple(f"sync[{e}]" for e in ENTITIES)
    needs = ((), ("sync[campus]",), ("sync[household]",), ("sync[person]",))
    return [
        START,
        StepScheduled(at=2.0, step="load", attempt=1, action="noop"),
        StepCompleted(at=3.0, step="load", attempt=1),
        StepFannedOut(at=3.0, step="sync", keys=keys, items=ENTITIES, needs=needs),
        StepScheduled(at=3.0, step="sync[campus]", attempt=1, action="workflow"),
    ]


def test_fan_out_children_follow_their_parent_and_wait_for_their_items() -> None:
    shown = view(fanned_out(), FAN_PLAN)
    assert list(shown.steps) == ["load", "sync", *(f"sync[{e}]" for e in ENTITIES), "report"]
    told = statuses(shown)
    assert told["sync"] == ("fanned_out", None)
    assert told["sync[household]"] == ("pending", "waits for campus")
    assert told["report"] == ("pending", "waits for sync")
    child = shown.steps["sync[person]"]
    assert (child.parent, child.action) == ("sync", "workflow")  # action from the parent's spec


def test_children_after_a_failed_item_are_blocked_naming_it() -> None:
    events = fanned_out()
    events += [
        StepCompleted(at=4.0, step="sync[campus]", attempt=1),
        StepScheduled(at=4.0, step="sync[household]", attempt=1, action="workflow"),
        StepAttemptFailed(at=5.0, step="sync[household]", attempt=1, error="bad row 7"),
        StepSkipped(at=5.0, step="sync[person]", reason="an item it needs did not complete"),
    ]
    told = statuses(view(events, FAN_PLAN))
    assert told["sync[campus]"] == ("completed", None)
    assert told["sync[household]"] == ("failed", None)
    assert told["sync[person]"] == ("blocked", "household failed")
    # not skipped by the decider yet: blocked all the same
    assert told["sync[address]"] == ("blocked", "household failed (via person)")


def test_the_error_names_the_failed_step() -> None:
    state = replace(fold([START]), status="failed", error="disk full", failed_step="a")
    assert execution_error(state) == "step a failed: disk full"
    named = replace(state, error="step a failed: disk full")
    assert execution_error(named) == "step a failed: disk full"
    assert execution_error(replace(state, failed_step=None)) == "disk full"


def test_without_a_plan_the_begun_steps_are_shown() -> None:
    events: list[AnyEvent] = [START, StepScheduled(at=2.0, step="x", attempt=1, action="noop")]
    shown = view(events, ())
    assert statuses(shown) == {"x": ("scheduled", None)}


def test_a_status_this_code_does_not_know_is_passed_on() -> None:
    state = fold([START])
    later = cast(Any, "cancelled")  # a status a newer fold may add
    state = replace(state, steps={"a": StepState(status=later, action="noop")})
    assert tell(state, PLAN)["a"].status == "cancelled"


def test_short_names_are_siblings_keys() -> None:
    assert short_name("sync[household]", "sync") == "household"
    assert short_name("sync[household]", None) == "sync[household]"
    assert short_name("other[x]", "sync") == "other[x]"


# --- properties over simulated executions --------------------------------------


def check_view(state: ExecutionState, plan: tuple[PlannedStep, ...]) -> None:
    shown = execution_view(state, 0, len(plan), plan=plan)
    keys = list(shown.steps)
    assert set(keys) == {p.name for p in plan} | set(state.steps)
    assert len(keys) == len(set(keys))
    for key, step in state.steps.items():
        if step.children:  # the children follow their parent, in order
            at = keys.index(key)
            assert keys[at + 1 : at + 1 + len(step.children)] == list(step.children)
    specs = {p.name: p for p in plan}
    for key, told in shown.steps.items():
        folded = state.steps.get(key)
        if folded is not None and folded.status in ("completed", "failed", "fanned_out"):
            assert told.status == folded.status, key
        if told.status == "blocked":
            assert folded is None or folded.status in ("pending", "skipped"), key
            hard = folded.item_needs if folded and folded.parent else specs[key].needs
            assert any(shown.steps[d].status in ("failed", "blocked") for d in hard), key
            assert told.reason is not None
        if told.status == "running":
            assert folded is not None
            assert (folded.status, folded.progress is not None) == ("scheduled", True)
        if state.status in TERMINAL_EXECUTION:
            assert told.status != "pending", key
        elif folded is None:
            assert told.status in ("pending", "blocked"), key


@settings(max_examples=75, deadline=None)
@given(simulated_runs())
def test_every_state_of_a_run_shows_every_planned_step(run: Run) -> None:
    plan = plan_of(run.workflow)
    history = run.history
    for k in range(len(history) + 1):
        check_view(fold(history[:k]), plan)


def test_plan_of_a_definition() -> None:
    workflow = parse_manifest(
        "name: p\nsteps:\n  a: {action: noop}\n  b: {action: noop, needs: [a], after: []}\n",
        "yaml",
        "<test>",
    )
    assert plan_of(workflow) == (
        PlannedStep(name="a", action="noop"),
        PlannedStep(name="b", action="noop", needs=("a",)),
    )
    # an execution started on it lists both steps at once
    started = decide(fold([START]), workflow, 1.0).state
    assert list(execution_view(started, 0, 2, plan=plan_of(workflow)).steps) == ["a", "b"]
