"""Golden histories: the example workflows' recorded decisions, replayed by today's code.

Each ``tests/histories/<example>.json`` (written by ``python -m
tests.histories.record``) must replay to the same decisions and the same state;
a decider that decides otherwise must say where, in a short readable error
(Temporal's replayer tests do the same for workflow code).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from natsflow.events.codec import decode_snapshot, encode_snapshot
from natsflow.events.decider import Decision
from natsflow.events.errors import NondeterminismError
from natsflow.events.fold import fold
from natsflow.events.messages import (
    AnyInbox,
    Cancel,
    ChildEnded,
    Progress,
    Result,
    Signal,
    Start,
    TimerDue,
)
from natsflow.events.model import INITIAL, AnyEvent, ExecutionState, StepScheduled
from natsflow.events.replay import RecordedDecision, replay
from natsflow.manifests.decider import ManifestDecider
from natsflow.manifests.loader import load_manifest
from natsflow.manifests.schema import Workflow
from tests.histories.golden import EXAMPLES, History, encode, path_of, read, recorded_files

FILES = recorded_files()
RERECORD = "re-record with: .venv/bin/python -m tests.histories.record (and say why in the commit)"


def events_of(decisions: tuple[RecordedDecision, ...]) -> list[AnyEvent]:
    return [event for decision in decisions for event in decision.events]


def new_state(history: History) -> ExecutionState:
    return replace(INITIAL, execution_id=history.execution_id)


def test_every_example_has_a_golden_history() -> None:
    examples = {path.stem for path in EXAMPLES.glob("*.yaml")}
    assert examples, f"no example manifests in {EXAMPLES}"
    missing = examples - {path.stem for path in FILES}
    assert not missing, f"no golden history for {sorted(missing)}: {RERECORD}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replay_gives_the_recorded_decisions_and_state(path: Path) -> None:
    history = read(path)
    state = replay(ManifestDecider(history.deployed()), history.execution_id, history.decisions)
    assert state == history.final_state
    assert state == fold(events_of(history.decisions))
    assert state.status == "completed"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replay_against_the_current_example(path: Path) -> None:
    history = read(path)
    current = load_manifest(EXAMPLES / f"{history.workflow}.yaml")
    try:
        state = replay(ManifestDecider(current), history.execution_id, history.decisions)
    except NondeterminismError as exc:
        pytest.fail(f"{exc}\nif the example changed on purpose, {RERECORD}")
    assert state == history.final_state


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_snapshot_plus_tail_gives_the_same_state(path: Path) -> None:
    """At every decision: the state from a snapshot of the history before it, plus the
    rest (folded, or decided again), is the final state."""
    history = read(path)
    decider = ManifestDecider(history.deployed())
    for middle in range(len(history.decisions) + 1):
        head, tail = history.decisions[:middle], history.decisions[middle:]
        before = fold(events_of(head), new_state(history))
        snapshot, covers = decode_snapshot(encode_snapshot(before, before.events))
        assert (snapshot, covers) == (before, before.events)
        assert fold(events_of(tail), snapshot) == history.final_state
        replayed = replay(decider, history.execution_id, tail, state=snapshot)
        assert replayed == history.final_state


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_file_is_as_the_recorder_writes_it(path: Path) -> None:
    """Decoding and encoding again gives the same bytes: tags and floats round-trip, and
    a hand edit shows up here rather than as a puzzling replay."""
    assert encode(read(path)) == path.read_bytes(), RERECORD


def test_histories_replay_messages_that_change_nothing() -> None:
    """Between them, the histories hold a duplicate result, progress report and start,
    a stale timer, a stale attempt's result and a late cancel: all decided as nothing."""
    idle: set[str] = set()
    for path in FILES:
        history = read(path)
        state = new_state(history)
        for decision in history.decisions:
            if not decision.events:
                idle.add(_what(state, decision.message))
            state = fold(decision.events, state)
    assert idle >= {
        "duplicate result",
        "stale attempt's result",
        "duplicate progress",
        "stale timer",
        "start of a started execution",
        "cancel of an ended execution",
    }


def _what(state: ExecutionState, message: AnyInbox) -> str:
    match message:
        case Result():
            step = state.steps[message.step]
            stale = step.attempt != message.attempt or step.iteration != message.iteration
            return "stale attempt's result" if stale else "duplicate result"
        case Progress():
            return "duplicate progress"
        case TimerDue():
            return "stale timer"
        case Start():
            return "start of a started execution"
        case Cancel():
            return "cancel of an ended execution"
        case ChildEnded():
            return "report of a child no step waits for"
        case Signal():
            return "signal to an ended execution"
        case _:
            return f"{message.__struct_config__.tag} message"


# --- a changed decider ----------------------------------------------------------


def dag_with(change: Callable[[dict[str, Any]], None]) -> tuple[History, ManifestDecider]:
    """The dag history, and a decider of its manifest as changed by ``change``."""
    history = read(path_of("dag"))
    doc = msgspec.json.decode(bytes(history.manifest))
    change(doc)
    return history, ManifestDecider(msgspec.convert(doc, Workflow))


def nondeterminism(change: Callable[[dict[str, Any]], None]) -> NondeterminismError:
    history, decider = dag_with(change)
    with pytest.raises(NondeterminismError) as info:
        replay(decider, history.execution_id, history.decisions)
    return info.value


def position_of(history: History, step: str) -> int:
    """The decision that first scheduled ``step``."""
    return next(
        i
        for i, decision in enumerate(history.decisions)
        if any(isinstance(e, StepScheduled) and e.step == step for e in decision.events)
    )


def rename_left(doc: dict[str, Any]) -> None:
    doc["steps"] = {("left_branch" if k == "left" else k): v for k, v in doc["steps"].items()}
    for spec in doc["steps"].values():
        spec["needs"] = ["left_branch" if n == "left" else n for n in spec["needs"]]
    join = doc["steps"]["join"]["with"]
    join["left"] = join["left"].replace("steps.left.", "steps.left_branch.")


def fetch_runs_shell(doc: dict[str, Any]) -> None:
    doc["steps"]["fetch"]["action"] = "shell"


def fetch_other_source(doc: dict[str, Any]) -> None:
    doc["steps"]["fetch"]["with"]["source"] = "elsewhere"


def flaky_waits_longer(doc: dict[str, Any]) -> None:
    doc["steps"]["flaky"]["retry"]["delay"] = 1.0


def flaky_tries_twice(doc: dict[str, Any]) -> None:
    doc["steps"]["flaky"]["retry"]["attempts"] = 2


def drop_right(doc: dict[str, Any]) -> None:
    del doc["steps"]["right"]
    for spec in doc["steps"].values():
        spec["needs"] = [n for n in spec["needs"] if n != "right"]
    del doc["steps"]["join"]["with"]["right"]


@pytest.mark.parametrize(
    ("change", "position_step", "step", "expected", "recorded"),
    [
        (rename_left, "left", "left", "step_scheduled(left_branch,", "step_scheduled(left,"),
        (fetch_runs_shell, "fetch", "fetch", "action=shell", "action=noop"),
        (fetch_other_source, "fetch", "fetch", '"source":"elsewhere"', '"source":"example"'),
        (drop_right, "right", "right", "nothing", "step_scheduled(right,"),
    ],
    ids=["step renamed", "action changed", "params changed", "step removed"],
)
def test_a_changed_plan_names_where_it_departs(
    change: Callable[[dict[str, Any]], None],
    position_step: str,
    step: str,
    expected: str,
    recorded: str,
) -> None:
    error = nondeterminism(change)
    assert error.execution == "dag-golden"
    assert error.step == step
    assert expected in error.expected
    assert recorded in error.recorded
    assert error.position == position_of(read(path_of("dag")), position_step)


@pytest.mark.parametrize(
    ("change", "expected"),
    [(flaky_waits_longer, "retry_at=1767225601.31"), (flaky_tries_twice, "no retry")],
    ids=["backoff changed", "attempts changed"],
)
def test_a_changed_retry_policy_names_the_failed_attempt(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    error = nondeterminism(change)
    assert error.step == "flaky"
    assert error.expected.startswith("step_attempt_failed(flaky, attempt=")
    assert expected in error.expected
    assert "retry_at=" in error.recorded
    assert expected not in error.recorded


def test_the_error_message_is_short_and_readable() -> None:
    error = nondeterminism(rename_left)
    message = str(error)
    assert message == (
        "execution dag-golden: nondeterminism at decision 3 (step left): the code decides"
        " step_scheduled(left_branch, attempt=1, action=shell), the history recorded"
        " step_scheduled(left, attempt=1, action=shell)"
    )
    # params of a changed step are long: only the fields that differ are shown, cut short
    message = str(nondeterminism(fetch_other_source))
    assert "\n" not in message
    assert len(message) < 400
    assert "StepScheduled(" not in message


def test_a_recording_with_an_event_more_names_it() -> None:
    history = read(path_of("hello"))
    first = history.decisions[0]
    extra = replace(first.events[-1], step="greet_again")
    tampered = (replace(first, events=(*first.events, extra)), *history.decisions[1:])
    with pytest.raises(NondeterminismError) as info:
        replay(ManifestDecider(history.deployed()), history.execution_id, tampered)
    assert (info.value.position, info.value.step) == (0, "greet_again")
    assert info.value.expected == "nothing"
    assert info.value.recorded == "step_scheduled(greet_again, attempt=1, action=shell)"


class Crashes:
    """A decider that cannot handle what the history holds."""

    def react(self, state: ExecutionState, message: AnyInbox, now: float) -> Decision:
        raise KeyError("greet")


def test_a_decider_that_raises_on_the_history_is_nondeterminism_too() -> None:
    history = read(path_of("hello"))
    with pytest.raises(NondeterminismError) as info:
        replay(Crashes(), history.execution_id, history.decisions)
    error = info.value
    assert (error.execution, error.position) == ("hello-golden", 0)
    assert error.expected == "an error (KeyError: 'greet')"
    assert error.recorded.startswith("execution_started(workflow=hello")
    assert isinstance(error.__cause__, KeyError)
