"""The code decider, pure: random orders of step results, signals and timer firings
replay to the same decisions; a sticky decider decides as a fresh replay does;
serialization errors; nondeterminism; ``patched``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from natsflow.actors.apps import step_registry
from natsflow.code import CodeApp, CodeDecider, load_app, patched, step, workflow
from natsflow.code.definition import step_action
from natsflow.code.replay import positions
from natsflow.events.errors import NondeterminismError, TerminalStepError
from natsflow.events.fold import fold
from natsflow.events.messages import AnyInbox, Cancel, Result, Signal, Start, TimerDue
from natsflow.events.model import INITIAL, AnyEvent, ExecutionState
from tests.unit.code import flows

APP = load_app([flows])
EXECUTION = "demo==pack-01"


def outstanding(state: ExecutionState, app: CodeApp) -> list[AnyInbox]:
    """Every message the world could send the execution now."""
    out: list[AnyInbox] = []
    for key, s in state.steps.items():
        if s.status == "scheduled" and not key.startswith("~"):
            out.append(Result(step=key, attempt=s.attempt, ok=True, output=run_step(app, s)))
        elif s.status == "waiting" and s.timer_id is not None:
            out.append(TimerDue(timer_id=s.timer_id, step=key))
    return out


def run_step(app: CodeApp, s: Any) -> Any:
    action = step_registry(app).get(s.action)

    class Ctx:
        execution_id = EXECUTION
        step, attempt, idempotency_key = "step", s.attempt, f"{EXECUTION}:step:{s.attempt}"
        report_progress = None  # read by step_context(); these steps report none

    return asyncio.run(action(Ctx(), s.input))  # type: ignore[arg-type]


def drive(
    decider: CodeDecider, choices: st.DataObject | None, signal_early: bool, fresh_check: bool
) -> tuple[ExecutionState, list[AnyEvent]]:
    state = replace(INITIAL, execution_id=EXECUTION)
    history: list[AnyEvent] = []
    now = 1.0
    inbox: list[AnyInbox] = [Start(workflow="pack", version="v", input={"name": "x"})]
    sent_signal = False
    while state.status in ("pending", "running"):
        if signal_early and not sent_signal and state.status == "running":
            inbox.append(Signal(name="approve", data="early", id="s1"))  # before the wait
            sent_signal = True
        if not inbox:
            inbox = outstanding(state, decider.app)
            if not sent_signal and any(k.startswith("~signal") for k in state.steps):
                inbox.append(Signal(name="approve", data="late", id="s1"))
                sent_signal = True
        assert inbox, state
        index = 0 if choices is None else choices.draw(st.integers(0, len(inbox) - 1))
        message = inbox.pop(index)
        now += 1.0
        decision = decider.react(state, message, now)
        if fresh_check:  # a fresh replay from the same state decides the same
            again = CodeDecider(decider.app, decider.definition).react(state, message, now)
            assert again.events == decision.events
            assert again.state == decision.state
        history.extend(decision.events)
        state = decision.state
        inbox = [m for m in inbox if m not in outstanding_done(state, m)]
    return state, history


def outstanding_done(state: ExecutionState, message: AnyInbox) -> list[AnyInbox]:
    """Messages no longer meaningful (a step that finished meanwhile)."""
    if isinstance(message, Result):
        s = state.steps.get(message.step)
        if s is None or s.status != "scheduled":
            return [message]
    return []


@settings(max_examples=40, deadline=None)
@given(choices=st.data(), signal_early=st.booleans())
def test_any_order_of_results_signals_and_timers_gives_the_same_output(
    choices: st.DataObject, signal_early: bool
) -> None:
    decider = CodeDecider(APP, APP.workflows["pack"])
    state, history = drive(decider, choices, signal_early, fresh_check=True)
    assert state.status == "completed", state
    output = state.output
    assert output["label"] == "shipped box-x"
    assert output["filled"] == 3
    assert output["sum"] == 32
    # a late signal may lose the race with the wait's timeout (then: its default)
    assert output["approval"] in (("early",) if signal_early else ("late", "auto"))
    assert fold(history, replace(INITIAL, execution_id=EXECUTION)) == state
    keys = sorted(positions(state).items())
    assert [k for _, k in keys] == [
        "create_box#0",
        "fill#1",
        "~sleep#2",
        "~signal:approve#3",
        "fill#4",
        "fill#5",
        "ship#6",
    ]


def test_a_sticky_decider_replays_once_per_execution() -> None:
    decider = CodeDecider(APP, APP.workflows["pack"])
    state, _ = drive(decider, None, signal_early=False, fresh_check=False)
    assert state.status == "completed"
    assert decider.replays == 1


def test_now_and_uuid_replay_to_the_same_values() -> None:
    state, _ = drive(CodeDecider(APP, APP.workflows["pack"]), None, False, False)
    other, _ = drive(CodeDecider(APP, APP.workflows["pack"]), None, False, False)
    assert state.output["id"] == other.output["id"]
    assert state.output["at"] == other.output["at"]


def half_done() -> ExecutionState:
    decider = CodeDecider(APP, APP.workflows["pack"])
    state = replace(INITIAL, execution_id=EXECUTION)
    state = decider.react(state, Start(workflow="pack", version="v", input={"name": "x"}), 1).state
    out = {"id": "box-x", "size": 1}
    state = decider.react(
        state, Result(step="create_box#0", attempt=1, ok=True, output=out), 2
    ).state
    return state


def test_a_reordered_workflow_raises_nondeterminism_naming_position_and_steps() -> None:
    @workflow(name="pack")
    async def changed(order: dict[str, Any]) -> None:
        await flows.ship(flows.Box(id="b", size=1))  # was create_box at position 0

    app = CodeApp("demo", dict(APP.workflows), dict(APP.steps))
    app.workflows["pack"] = changed
    message = Result(step="fill#1", attempt=1, ok=True, output=3)
    with pytest.raises(NondeterminismError) as raised:
        CodeDecider(app, changed).react(half_done(), message, 3)
    error = raised.value
    assert error.execution == EXECUTION
    assert error.position == 0
    assert error.expected == "ship"
    assert error.recorded == "create_box"
    assert "position" not in str(error) or "0" in str(error)


def test_the_restored_code_goes_on_after_a_mismatch() -> None:
    message = Result(step="fill#1", attempt=1, ok=True, output=3)
    decision = CodeDecider(APP, APP.workflows["pack"]).react(half_done(), message, 3)
    assert [type(e).__name__ for e in decision.events] == ["StepCompleted", "TimerStarted"]


class Sandbox:
    """Not storable: a live handle."""


@step
def make_sandbox() -> Sandbox:
    return Sandbox()


@workflow(name="sync_docs")
async def sync_docs(_: Any = None) -> None:
    await flows.create_box(Sandbox())  # type: ignore[arg-type]


def test_a_step_result_that_cannot_be_stored_fails_the_step_naming_it() -> None:
    app = CodeApp("demo", {}, {"make_sandbox": make_sandbox})
    action = step_registry(app).get(step_action("demo", "make_sandbox"))

    class Ctx:
        execution_id = "demo==sync_docs-01"
        step, attempt, idempotency_key = "make_sandbox#0", 1, "demo==sync_docs-01:make_sandbox#0:1"
        report_progress = None  # read by step_context(); this step reports none

    with pytest.raises(TerminalStepError) as raised:
        asyncio.run(action(Ctx(), {"args": [], "kwargs": {}}))  # type: ignore[arg-type]
    assert str(raised.value) == (
        "step make_sandbox of workflow sync_docs returned a Sandbox, which cannot be stored:"
        " return JSON values, a msgspec Struct or a dataclass"
    )


def test_a_step_argument_that_cannot_be_stored_fails_at_the_call_site() -> None:
    app = CodeApp("demo", {"sync_docs": sync_docs}, dict(APP.steps))
    state = replace(INITIAL, execution_id="demo==sync_docs-01")
    decision = CodeDecider(app, sync_docs).react(state, Start(workflow="sync_docs", version="v"), 1)
    assert decision.state.status == "failed"
    assert decision.state.error == (
        "NotStorable: step create_box of workflow sync_docs was given a Sandbox, which cannot"
        " be stored: return JSON values, a msgspec Struct or a dataclass"
    )


def test_patched_takes_the_new_path_on_new_executions_only() -> None:
    decider = CodeDecider(APP, APP.workflows["patchy"])
    start = Start(workflow="patchy", version="v")
    new = decider.react(replace(INITIAL, execution_id="demo==patchy-1"), start, 1).state
    new = decider.react(
        new, Result(step="create_box#0", attempt=1, ok=True, output={"id": "b", "size": 1}), 2
    ).state
    assert "~patched:extra-fill" in new.steps
    assert "fill#1" in new.steps

    # an execution recorded with the code before the patch: create_box, then ship at 1
    @workflow(name="patchy")
    async def before(_: Any = None) -> str:
        box = await flows.create_box("p")
        return await flows.ship(box)

    old_decider = CodeDecider(APP, before)
    old = old_decider.react(replace(INITIAL, execution_id="demo==patchy-2"), start, 1).state
    old = old_decider.react(
        old, Result(step="create_box#0", attempt=1, ok=True, output={"id": "b", "size": 1}), 2
    ).state
    assert "ship#1" in old.steps
    done = decider.react(old, Result(step="ship#1", attempt=1, ok=True, output="shipped b"), 3)
    assert done.state.status == "completed"
    assert done.state.output == "shipped b"
    assert "~patched:extra-fill" not in done.state.steps


@workflow(name="tidy")
async def tidy(_: Any = None) -> str:
    try:
        box = await flows.create_box("t")
    finally:
        await flows.create_box("cleanup")  # a durable call in finally: legal, replayed
    return box.id


def test_cancelling_a_workflow_whose_finally_awaits_a_step_ends_it_cleanly() -> None:
    """The kept coroutine is closed on cancel: code in its ``finally`` that awaits a
    durable call must not turn the cancel (or an eviction) into an error."""
    app = CodeApp("demo", {"tidy": tidy}, dict(APP.steps))
    decider = CodeDecider(app, tidy)
    state = replace(INITIAL, execution_id="demo==tidy-1")
    state = decider.react(state, Start(workflow="tidy", version="v"), 1).state
    assert decider.kept() == 1
    decision = decider.react(state, Cancel(reason="stop"), 2)
    assert decision.state.status == "cancelled"
    assert decider.kept() == 0
    decider.react(
        replace(INITIAL, execution_id="demo==tidy-2"), Start(workflow="tidy", version="v"), 3
    )
    decider.forget("demo==tidy-2")  # passivation closes it too
    assert decider.kept() == 0


@workflow(name="ticket")
async def ticket(_: Any = None) -> str:
    if patched("issue#1"):  # a patch named after a ticket: '#' and digits
        await flows.create_box("new")
    box = await flows.create_box("b")
    return await flows.ship(box)


def test_a_patch_name_with_a_hash_and_digits_is_not_read_as_a_position() -> None:
    app = CodeApp("demo", {"ticket": ticket}, dict(APP.steps))
    state = replace(INITIAL, execution_id="demo==ticket-1")
    state = CodeDecider(app, ticket).react(state, Start(workflow="ticket", version="v"), 1).state
    assert "~patched:issue#1" in state.steps
    assert positions(state) == {0: "create_box#0"}
    box = {"id": "box-new", "size": 1}
    message = Result(step="create_box#0", attempt=1, ok=True, output=box)
    fresh = CodeDecider(app, ticket).react(state, message, 2)  # replays from the start
    assert "create_box#1" in fresh.state.steps
