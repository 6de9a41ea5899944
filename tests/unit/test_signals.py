"""Signals and the ``wait`` action, pure: kept signals go to waits oldest first, a
subject wait's message completes its step, timeouts take their declared path, the
commands that record and remove subject waits, and params checked at deploy."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsflow.events.commands import ListenFor, StopListening, commands_for, pending_commands
from natsflow.events.errors import ManifestError
from natsflow.events.fold import fold
from natsflow.events.messages import AnyInbox, Cancel, Signal, Start, TimerDue
from natsflow.events.model import INITIAL, AnyEvent, ExecutionState
from natsflow.events.views import waiting_for
from natsflow.manifests.decider import react
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow


def workflow(steps: dict[str, Any]) -> Workflow:
    doc = {"name": "w", "steps": steps}
    return parse_manifest(orjson.dumps(doc), "json", "test.json")


class Drive:
    """An execution driven message by message, as its actor would (no I/O)."""

    def __init__(self, wf: Workflow, input: Any = None) -> None:
        self.wf = wf
        self.state = ExecutionState(execution_id="ex-1")
        self.events: list[AnyEvent] = []
        self.now = 1000.0
        self.send(Start(workflow="w", version="v1", input=input))

    def send(self, message: AnyInbox) -> tuple[AnyEvent, ...]:
        self.now += 0.5
        before = self.state
        decision = react(before, self.wf, message, self.now)
        self.state = decision.state
        self.events.extend(decision.events)
        self.last_commands = commands_for(before, decision.state, decision.events)
        return decision.events


def chain(names: list[str]) -> Workflow:
    steps: dict[str, Any] = {}
    for i, name in enumerate(names):
        steps[f"w{i}"] = {"action": "wait", "with": {"signal": name}}
        if i:
            steps[f"w{i}"]["needs"] = [f"w{i - 1}"]
    return workflow(steps)


@given(
    waits=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4),
    signals=st.lists(st.sampled_from(["a", "b"]), max_size=8),
    split=st.integers(min_value=0, max_value=40),
)
def test_each_wait_takes_the_oldest_kept_signal_of_its_name(
    waits: list[str], signals: list[str], split: int
) -> None:
    run = Drive(chain(waits))
    for n, name in enumerate(signals):
        run.send(Signal(name=name, data=n, id=f"s{n}"))
    # the model: waits begin one after another; each takes the oldest of its name
    queues: dict[str, list[int]] = {"a": [], "b": []}
    outputs: list[int] = []
    for n, name in enumerate(signals):
        if len(outputs) == len(waits):
            break  # the execution has completed: a later signal reaches nothing
        queues[name].append(n)
        while len(outputs) < len(waits) and queues[waits[len(outputs)]]:
            outputs.append(queues[waits[len(outputs)]].pop(0))
    done = [run.state.steps[f"w{i}"].output for i in range(len(outputs))]
    assert done == outputs
    kept = {k: [s.data for s in v] for k, v in run.state.signals.items()}
    assert kept == {k: v for k, v in queues.items() if v}
    expected_status = "completed" if len(outputs) == len(waits) else "running"
    assert run.state.status == expected_status
    # the fold of a snapshot and the tail is the fold of the whole history
    cut = min(split, len(run.events))
    assert fold(run.events[cut:], fold(run.events[:cut])) == fold(run.events) == run.state


def test_the_same_signal_id_while_kept_counts_once() -> None:
    run = Drive(workflow({"nap": {"action": "sleep", "with": {"duration": 5}}}))
    assert run.send(Signal(name="go", data=1, id="x"))
    assert run.send(Signal(name="go", data=1, id="x")) == ()
    assert len(run.state.signals["go"]) == 1


def test_a_subject_wait_is_recorded_completed_by_its_message_and_removed() -> None:
    wf = workflow(
        {"paid": {"action": "wait", "with": {"subject": "pay.${{ input.id }}.done"}, "timeout": 9}}
    )
    run = Drive(wf, {"id": 7})
    step = run.state.steps["paid"]
    assert waiting_for(step) == "subject pay.7.done"
    assert ListenFor(execution_id="ex-1", step="paid", subject="pay.7.done") in run.last_commands
    assert any(isinstance(c, ListenFor) for c in pending_commands(run.state))
    # a message for another step, or a plain signal, does not complete it
    assert run.send(Signal(name="pay.7.done", data=1, id="m0", step="other")) == ()
    run.send(Signal(name="pay.7.done", data={"ok": True}, id="m1", step="paid"))
    assert run.state.status == "completed"
    assert run.state.steps["paid"].output == {"ok": True}
    assert StopListening(execution_id="ex-1", steps=("paid",)) in run.last_commands
    # its timeout, due later, changes nothing now
    assert run.send(TimerDue(timer_id=step.timer_id or "", step="paid")) == ()


def test_a_cancel_removes_the_open_subject_waits() -> None:
    run = Drive(workflow({"paid": {"action": "wait", "with": {"subject": "pay.1"}}}))
    run.send(Cancel(reason="test"))
    assert StopListening(execution_id="ex-1", steps=("paid",)) in run.last_commands


@pytest.mark.parametrize(
    ("on_timeout", "status", "output", "kind"),
    [("fail", "failed", None, "timeout"), ("continue", "completed", {"d": 1}, None)],
)
def test_a_timeout_takes_the_declared_path(
    on_timeout: str, status: str, output: Any, kind: str | None
) -> None:
    with_ = {"signal": "go", "on_timeout": on_timeout, "default": {"d": 1}}
    run = Drive(workflow({"w": {"action": "wait", "with": with_, "timeout": "2s"}}))
    timer = run.state.steps["w"].timer_id
    assert timer is not None
    run.send(TimerDue(timer_id=timer, step="w"))
    step = run.state.steps["w"]
    assert step.status == ("failed" if status == "failed" else "completed")
    assert step.kind == kind
    assert step.output == output
    assert run.state.status == status
    # a signal after the timeout is kept, not given to the ended wait
    if status == "completed":
        assert run.send(Signal(name="go", id="late")) == ()  # the execution has ended


@pytest.mark.parametrize(
    ("with_", "problem"),
    [
        ({}, "steps.w.with: name exactly one of signal or subject"),
        ({"signal": "a", "subject": "b"}, "steps.w.with: name exactly one of signal or subject"),
        ({"subject": "natsflow.in.x"}, 'steps.w.with: subject: "natsflow.in.x" is not a subject'),
        ({"signal": "a", "on_timeout": "skip"}, 'steps.w.with.on_timeout: expected one of "fail"'),
    ],
)
def test_wait_params_are_checked_at_deploy(with_: dict[str, Any], problem: str) -> None:
    with pytest.raises(ManifestError) as info:
        workflow({"w": {"action": "wait", "with": with_}})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_a_templated_subject_is_accepted_at_deploy() -> None:
    wf = workflow({"w": {"action": "wait", "with": {"subject": "p.${{ input.id }}.settled"}}})
    assert wf.steps["w"].action == "wait"
    assert INITIAL.signals == {}
