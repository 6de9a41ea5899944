"""Where the parts of issue 9 meet: resume and fan-out ordering, resume and child
workflows, pause and waits, cancel and children (a review's findings, each pinned)."""

from __future__ import annotations

from natsflow.events.commands import (
    CancelChild,
    StartChild,
    commands_for,
    pending_commands,
    resend_commands,
)
from natsflow.events.messages import Cancel, ChildEnded, ErrorInfo, Resume
from natsflow.events.model import StepScheduled
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow
from tests.unit.strategies import Run
from tests.unit.test_decide import answer, scheduled


def _workflow(text: str) -> Workflow:
    return parse_manifest(text, "yaml", "test.yaml")


def test_resume_keeps_a_fan_out_items_soft_order() -> None:
    """An item run again by a resume (pending again) still waits for the items it
    comes ``after``: ``c`` needs ``a`` and comes after ``b``."""
    run = Run(
        _workflow(
            """
name: wf
steps:
  each:
    action: noop
    for_each:
      items: "${{ [{'k': 'a', 'n': [], 'l': []}, {'k': 'b', 'n': ['a'], 'l': []}, {'k': 'c', 'n': ['a'], 'l': ['b']}] }}"
      key: "${{ item.k }}"
      needs: "${{ item.n }}"
      after: "${{ item.l }}"
"""
        )
    )
    assert scheduled(run.start()) == ["each[a]"]
    answer(run, "each[a]", ok=False, message="down", retryable=False)
    assert run.state.status == "failed"
    run.apply(Resume())
    assert run.state.steps["each[c]"].item_after == ("each[b]",)
    assert scheduled(answer(run, "each[a]")) == ["each[b]"]  # not c: it comes after b
    assert scheduled(answer(run, "each[b]")) == ["each[c]"]
    answer(run, "each[c]")
    final = run.state
    assert final.status == "completed"


ORCHESTRATOR = """
name: orch
steps:
  broken: {action: noop}
  child:
    action: workflow
    with: {workflow: entity-sync, input: {entity: campus}}
  last: {action: noop, needs: [child]}
"""


def _child_start(commands: tuple[object, ...]) -> StartChild:
    (start,) = [c for c in commands if isinstance(c, StartChild)]
    return start


def test_resume_starts_a_fresh_child_for_a_step_whose_child_the_failure_cancelled() -> None:
    """The parent failed (another step) while its child ran: the child was cancelled with
    it. Resuming the parent runs that ``workflow`` step again: it must start a child that
    can run, not meet the cancelled one again (which fails the step at once)."""
    run = Run(_workflow(ORCHESTRATOR), execution_id="orch-1")
    started = run.start()
    first = next(e for e in started if isinstance(e, StepScheduled) and e.step == "child")
    assert first.child == "orch-1=child"
    before = run.state
    failed = answer(run, "broken", ok=False, message="down", retryable=False)
    assert run.state.status == "failed"
    assert any(type(c).__name__ == "CancelChild" for c in commands_for(before, run.state, failed))
    before = run.state
    resumed = run.apply(Resume())
    again = next(e for e in resumed if isinstance(e, StepScheduled) and e.step == "child")
    assert again.child is not None
    assert again.child != first.child  # the cancelled child cannot run again
    assert _child_start(commands_for(before, run.state, resumed)).child == again.child
    run.tasks.clear()  # the child step is no worker's task
    # the fresh child completes: so does the step, then the rest
    run.apply(ChildEnded(step="child", child=again.child, status="completed", output=1))
    assert run.state.steps["child"].status == "completed"


def test_resume_from_a_workflow_step_runs_a_fresh_child() -> None:
    """``--from`` re-runs a completed ``workflow`` step: a new child, not the old one's
    outcome handed back."""
    run = Run(
        _workflow(
            """
name: orch
steps:
  child:
    action: workflow
    with: {workflow: entity-sync}
  last: {action: noop, needs: [child]}
"""
        ),
        execution_id="orch-1",
    )
    run.start()
    run.apply(ChildEnded(step="child", child="orch-1=child", status="completed", output=1))
    answer(run, "last", ok=False, message="down", retryable=False)
    assert run.state.status == "failed"
    resumed = run.apply(Resume(from_step="child"))
    again = next(e for e in resumed if isinstance(e, StepScheduled) and e.step == "child")
    assert again.child not in (None, "orch-1=child")


def test_a_retried_workflow_step_keeps_its_child_across_a_resume() -> None:
    """A ``workflow`` step that failed because its child failed goes on with the same
    child (an operator may resume the child first: its outcome is then handed back)."""
    run = Run(
        _workflow(
            "name: orch\nsteps:\n  child: {action: workflow, with: {workflow: entity-sync}}\n"
        ),
        execution_id="orch-1",
    )
    run.start()
    run.apply(ChildEnded(step="child", child="orch-1=child", status="failed"))
    assert run.state.status == "failed"
    resumed = run.apply(Resume())
    again = next(e for e in resumed if isinstance(e, StepScheduled) and e.step == "child")
    assert again.child == "orch-1=child"
    assert again.attempt == 2


def test_a_cancelled_parent_cancels_no_child_that_never_started() -> None:
    """A ``workflow`` step waiting to retry a child that could not start has no child to
    cancel: not when the parent is cancelled, nor when that decision is carried out again
    (a ``cancel`` to an execution that does not exist is a dead letter)."""
    run = Run(
        _workflow(
            "name: orch\nsteps:\n  child:\n    action: workflow\n    with: {workflow: later}\n"
            "    retry: {attempts: 3, delay: 10s}\n"
        ),
        execution_id="orch-1",
    )
    run.start()
    not_started = ErrorInfo(message="not deployed", kind="child_not_started", retryable=True)
    run.apply(
        ChildEnded(step="child", child="orch-1=child", status="not_started", error=not_started)
    )
    assert run.state.steps["child"].status == "waiting"
    before = run.state
    cancelled = run.apply(Cancel(reason="op"))
    fresh = commands_for(before, run.state, cancelled)
    assert not [c for c in fresh if isinstance(c, CancelChild)]
    assert not [c for c in pending_commands(run.state) if isinstance(c, CancelChild)]
    assert not [c for c in resend_commands(cancelled, run.state) if isinstance(c, CancelChild)]
