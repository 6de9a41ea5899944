"""Child workflows in the pure core: ids, the decider's ``workflow`` step, the commands."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from natsflow.events.commands import (
    AnyCommand,
    CancelChild,
    NotifyParent,
    StartChild,
    commands_for,
    pending_commands,
)
from natsflow.events.fold import fold
from natsflow.events.ids import child_execution_id
from natsflow.events.messages import AnyInbox, Cancel, ChildEnded, ErrorInfo, Start, TimerDue
from natsflow.events.model import (
    ExecutionState,
    ParentLink,
    StepAttemptFailed,
    StepScheduled,
    TimerStarted,
)
from natsflow.manifests.decider import react
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow

PARENT = "orch-01hf7yat0000000000"
ORCHESTRATOR = parse_manifest(
    """
name: orch
steps:
  sync:
    action: workflow
    with: {workflow: entity-sync, input: {entity: "${{ input.entity }}"}}
    retry: {attempts: 3, delay: 1s}
  each:
    action: workflow
    needs: [sync]
    for_each: {items: "${{ input.items }}", key: "${{ item }}", concurrency: 1}
    with: {workflow: entity-sync, input: {entity: "${{ item }}"}}
output: "${{ steps.sync.output }}"
""",
    "yaml",
    "test.yaml",
)

# A NATS subject token and a KV key (nats-py's rule), all at once.
_TOKEN = re.compile(r"^[-/_=a-zA-Z0-9]+$")


class Parent:
    """One parent execution driven message by message, with the commands of each decision."""

    def __init__(self, workflow: Workflow = ORCHESTRATOR) -> None:
        self.workflow = workflow
        self.state = ExecutionState(execution_id=PARENT)
        self.now = 1000.0

    def send(self, message: AnyInbox) -> tuple[tuple[Any, ...], tuple[AnyCommand, ...]]:
        self.now += 1
        decision = react(self.state, self.workflow, message, self.now)
        assert decision.state == fold(decision.events, self.state)
        commands = commands_for(self.state, decision.state, decision.events)
        self.state = decision.state
        return decision.events, commands


def _started() -> tuple[Parent, tuple[AnyCommand, ...]]:
    parent = Parent()
    _, commands = parent.send(
        Start(workflow="orch", version="v1", input={"entity": "campus", "items": ["a", "b.c"]})
    )
    return parent, commands


def test_a_workflow_step_starts_its_child_by_a_derived_id() -> None:
    parent, commands = _started()
    step = parent.state.steps["sync"]
    assert step.status == "scheduled"
    assert step.child == f"{PARENT}=sync"
    starts = [c for c in commands if isinstance(c, StartChild)]
    assert starts == [
        StartChild(
            execution_id=PARENT,
            step="sync",
            attempt=1,
            child=f"{PARENT}=sync",
            workflow="entity-sync",
            input={"entity": "campus"},
        )
    ]
    # carried out again (a redelivery), the command names the same child
    assert [c for c in pending_commands(parent.state) if isinstance(c, StartChild)] == starts


def test_the_childs_output_completes_the_step() -> None:
    parent, _ = _started()
    events, _ = parent.send(
        ChildEnded(step="sync", child=f"{PARENT}=sync", status="completed", output={"n": 3})
    )
    assert parent.state.steps["sync"].status == "completed"
    assert parent.state.steps["sync"].output == {"n": 3}
    assert any(isinstance(e, StepScheduled) and e.child for e in events)  # the fan-out goes on


def test_a_failed_child_fails_the_step_without_a_retry() -> None:
    parent, _ = _started()
    events, commands = parent.send(ChildEnded(step="sync", child=f"{PARENT}=sync", status="failed"))
    step = parent.state.steps["sync"]
    assert (step.status, step.kind, step.attempt) == ("failed", "child_failed", 1)
    assert parent.state.status == "failed"
    assert not any(isinstance(c, StartChild) for c in commands)
    assert not any(isinstance(e, TimerStarted) for e in events)


def test_a_child_not_started_is_retried_for_the_same_child() -> None:
    parent, _ = _started()
    error = ErrorInfo(message="not deployed", kind="child_not_started", retryable=True)
    not_started = ChildEnded(
        step="sync", child=f"{PARENT}=sync", status="not_started", error=error, attempt=1
    )
    events, _ = parent.send(not_started)
    failed = [e for e in events if isinstance(e, StepAttemptFailed)]
    assert failed
    assert failed[0].retry_at is not None
    timer = parent.state.steps["sync"].timer_id
    assert timer is not None
    _, commands = parent.send(TimerDue(timer_id=timer, step="sync"))
    starts = [c for c in commands if isinstance(c, StartChild)]
    assert [(c.attempt, c.child) for c in starts] == [(2, f"{PARENT}=sync")]
    # the report for attempt 1, again, changes nothing now
    assert parent.send(not_started)[0] == ()


def test_a_report_of_another_child_changes_nothing() -> None:
    parent, _ = _started()
    stranger = ChildEnded(step="sync", child="someone-else", status="completed")
    assert parent.send(stranger)[0] == ()


def test_fan_out_children_get_ids_of_their_item_keys() -> None:
    parent, _ = _started()
    parent.send(ChildEnded(step="sync", child=f"{PARENT}=sync", status="completed"))
    children = parent.state.steps["each"].children
    assert parent.state.steps[children[1]].status == "pending"  # concurrency 1
    parent.send(ChildEnded(step=children[0], child=f"{PARENT}=each=a", status="completed"))
    assert [parent.state.steps[k].child for k in children] == [
        f"{PARENT}=each=a",
        f"{PARENT}=each==b476cc5a2c583fbb",  # b.c: hashed, a '.' cannot be in a subject token
    ]


def test_cancelling_the_parent_cancels_the_running_child() -> None:
    parent, _ = _started()
    _, commands = parent.send(Cancel(reason="operator"))
    assert parent.state.status == "cancelled"
    expected = CancelChild(
        execution_id=PARENT,
        child=f"{PARENT}=sync",
        reason=f"parent {PARENT} cancelled",
        workflow=parent.state.steps["sync"].input["workflow"],  # a code child: its app
    )
    assert expected in commands
    assert expected in pending_commands(parent.state)  # a redelivery sends it again


def test_a_finished_child_is_not_cancelled() -> None:
    parent, _ = _started()
    parent.send(ChildEnded(step="sync", child=f"{PARENT}=sync", status="failed"))
    assert parent.state.status == "failed"
    assert not any(isinstance(c, CancelChild) for c in pending_commands(parent.state))


def test_a_child_that_ends_tells_its_parent() -> None:
    child = Parent(
        parse_manifest("name: entity-sync\nsteps:\n  s: {action: noop}\n", "yaml", "c.yaml")
    )
    child.state = ExecutionState(execution_id=f"{PARENT}=sync")
    link = ParentLink(execution_id=PARENT, step="sync")
    child.send(Start(workflow="entity-sync", version="v1", parent=link))
    assert child.state.parent == link
    _, commands = child.send(Cancel(reason="parent went"))
    notify = [c for c in commands if isinstance(c, NotifyParent)]
    assert notify == [
        NotifyParent(
            execution_id=f"{PARENT}=sync",
            parent=link,
            status="cancelled",
            error=f"{PARENT}=sync cancelled: parent went",
            events=child.state.events,  # this ending's own report
        )
    ]
    assert notify[0] in pending_commands(child.state)


_keys = st.text(min_size=1, max_size=20)
_step_keys = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True),
    st.builds(lambda n, k: f"{n}[{k}]", st.from_regex(r"[a-z]{1,4}", fullmatch=True), _keys),
)


@given(st.lists(st.tuples(_step_keys, st.integers(0, 3)), min_size=2, max_size=6, unique=True))
def test_child_ids_are_tokens_and_distinct_per_step(steps: list[tuple[str, int]]) -> None:
    # a fan-out step is never also a loop: its items run iteration 0
    steps = [(k, 0 if "[" in k else i) for k, i in steps]
    steps = list(dict.fromkeys(steps))
    ids = [child_execution_id(PARENT, key, iteration) for key, iteration in steps]
    assert all(_TOKEN.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
