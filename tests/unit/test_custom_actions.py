"""Custom actions, pure: names and their subjects and consumers, contracts at deploy (templates
aside), before dispatch and on results, and what ``show`` says of a step waiting for a worker."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec.structs import replace

from natsflow.actors.jetstream.action_queues import action_consumer, custom_actions
from natsflow.actors.jetstream.topology import task_subject, worker_task_subjects
from natsflow.events.errors import ManifestError
from natsflow.events.messages import Result, Start, TimerDue
from natsflow.events.model import ExecutionState, StepAttemptFailed, StepScheduled
from natsflow.events.plan import PlannedStep
from natsflow.events.queues import ActionQueue
from natsflow.events.views import execution_view
from natsflow.manifests.actions import ACTIONS
from natsflow.manifests.custom import (
    action_of_token,
    action_token,
    custom_action_problem,
    is_custom_action,
)
from natsflow.manifests.decider import react
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow

T0 = 1_000.0

PAY = """
name: pay
actions:
  billing.charge:
    description: charge a card
    input:
      type: object
      required: [amount, currency]
      additionalProperties: false
      properties:
        amount: {type: number, minimum: 0}
        currency: {type: string, pattern: "^[A-Z]{3}$"}
    output:
      type: object
      required: [receipt]
      properties: {receipt: {type: string}}
steps:
  charge:
    action: billing.charge
    with: {amount: "${{ input.amount }}", currency: EUR}
    retry: {attempts: 2, delay: 1, backoff: fixed}
  notify:
    action: shell
    needs: [charge]
    with: {argv: [echo, "${{ steps.charge.output.receipt }}"]}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "yaml", "<test>")
    return info.value.problems


# --- names -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["billing.charge", "ml.embed", "a.b.c", "team-x.do-it2"])
def test_valid_custom_action_names(name: str) -> None:
    assert is_custom_action(name), custom_action_problem(name)
    assert action_of_token(action_token(name)) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("shell", "built-in"),
        ("nats.request", "built-in"),
        ("shel", "two or more"),
        ("Billing.charge", "two or more"),
        ("billing_charge.x", "two or more"),
        ("billing..charge", "two or more"),
        ("billing.charge.", "two or more"),
        ("billing.*", "two or more"),
        ("billing.>", "two or more"),
        ("billing. charge", "two or more"),
        ("1billing.charge", "two or more"),
        ("a." + "b" * 70, "at most 64"),
        ("nats.publish", "reserved"),
        ("natsflow.task", "reserved"),
    ],
)
def test_invalid_custom_action_names(name: str, reason: str) -> None:
    problem = custom_action_problem(name)
    assert problem is not None
    assert reason in problem


def test_subjects_and_consumers_of_custom_actions() -> None:
    assert task_subject("billing.charge") == "natsflow.task.billing_charge"
    assert action_consumer("billing.charge") == "natsflow-action-billing_charge"
    # natsflow's own workers filter the built-ins one by one: never a custom action's task
    builtin = set(worker_task_subjects())
    assert task_subject("billing.charge") not in builtin
    assert all(not is_custom_action(name) for name in ACTIONS)
    # no custom action's subject is a built-in's (names hold no underscores)
    assert {task_subject(n) for n in ACTIONS}.isdisjoint({task_subject("nats.request-x")})


def test_a_manifest_may_name_custom_actions() -> None:
    workflow = parse_manifest(PAY, "yaml", "<test>")
    assert workflow.steps["charge"].action == "billing.charge"
    assert custom_actions(workflow) == ("billing.charge",)
    contract = workflow.actions["billing.charge"]
    assert contract.description == "charge a card"
    assert contract.input is not None
    assert contract.output is not None


def test_a_typo_of_a_built_in_is_still_an_unknown_action() -> None:
    problems = _problems("name: w\nsteps: {a: {action: shel}}\n")
    assert problems[0].startswith('steps.a.action: unknown action "shel"')


# --- contracts at deploy -----------------------------------------------------


def test_deploy_checks_literal_with_against_the_input_schema_templates_aside() -> None:
    text = PAY.replace(
        'with: {amount: "${{ input.amount }}", currency: EUR}',
        'with: {amount: -1, currency: "${{ input.cur }}", tip: 1}',
    )
    assert _problems(text) == [
        "steps.charge.with: Additional properties are not allowed ('tip' was unexpected)",
        "steps.charge.with.amount: -1 is less than the minimum of 0",
    ]
    missing = PAY.replace("currency: EUR}", 'curr: "${{ input.c }}"}')
    assert "steps.charge.with: 'currency' is a required property" in _problems(missing)


def test_deploy_refuses_bad_contracts() -> None:
    text = PAY.replace("      required: [receipt]\n", "      required: receipt\n") + (
        "  extra:\n    action: noop\n"
    )
    text = text.replace("steps:\n", "  ml.embde: {}\n  shell: {input: {type: object}}\nsteps:\n", 1)
    problems = _problems(text)
    assert "actions[\"billing.charge\"].output.required: 'receipt' is not of type 'array'" in (
        problems
    )
    assert "actions[\"ml.embde\"]: no step uses action 'ml.embde' (a typo?)" in problems
    assert any(p.startswith("actions.shell: only custom actions") for p in problems), problems


# --- contracts at run time ---------------------------------------------------


def _start(workflow: Workflow, input: Any) -> tuple[ExecutionState, tuple[Any, ...]]:
    state = ExecutionState(execution_id="pay-1")
    start = Start(workflow=workflow.name, version="v1", input=input)
    decision = react(state, workflow, start, T0)
    return decision.state, decision.events


def test_a_rendered_input_that_breaks_the_schema_fails_the_step_before_dispatch() -> None:
    workflow = parse_manifest(PAY, "yaml", "<test>")
    state, events = _start(workflow, {"amount": "ten"})
    assert not any(isinstance(e, StepScheduled) for e in events)
    failed = next(e for e in events if isinstance(e, StepAttemptFailed))
    assert failed.kind == "invalid_input"
    assert failed.retry_at is None
    assert failed.error == (
        'the input of billing.charge does not fit actions["billing.charge"].input: '
        "input.amount: 'ten' is not of type 'number'"
    )
    assert state.status == "failed"


def test_a_fitting_input_is_dispatched() -> None:
    workflow = parse_manifest(PAY, "yaml", "<test>")
    state, events = _start(workflow, {"amount": 10})
    scheduled = [e for e in events if isinstance(e, StepScheduled)]
    assert [(e.action, e.input) for e in scheduled] == [
        ("billing.charge", {"amount": 10, "currency": "EUR"})
    ]
    assert state.steps["charge"].status == "scheduled"


def test_an_output_that_breaks_the_schema_fails_the_attempt_and_is_retried() -> None:
    workflow = parse_manifest(PAY, "yaml", "<test>")
    state, _ = _start(workflow, {"amount": 10})
    bad = Result(step="charge", attempt=1, ok=True, output={"receipt": 42})
    decision = react(state, workflow, bad, T0 + 1)
    failed = next(e for e in decision.events if isinstance(e, StepAttemptFailed))
    assert failed.kind == "invalid_output"
    assert failed.retry_at == T0 + 2  # retried per policy: attempts 2, fixed 1 s
    assert "output.receipt: 42 is not of type 'string'" in failed.error
    # the second attempt breaks it too: the step fails for good, and the execution
    state = decision.state
    timer = state.steps["charge"].timer_id
    assert timer is not None
    state = react(state, workflow, TimerDue(step="charge", timer_id=timer), T0 + 2).state
    again = Result(step="charge", attempt=2, ok=True, output={})
    decision = react(state, workflow, again, T0 + 3)
    assert decision.state.status == "failed"
    assert decision.state.steps["charge"].kind == "invalid_output"


def test_a_fitting_output_completes_the_step() -> None:
    workflow = parse_manifest(PAY, "yaml", "<test>")
    state, _ = _start(workflow, {"amount": 10})
    good = Result(step="charge", attempt=1, ok=True, output={"receipt": "r-1"})
    decision = react(state, workflow, good, T0 + 1)
    assert decision.state.steps["charge"].status == "completed"
    assert decision.state.steps["notify"].status == "scheduled"


# --- show ----------------------------------------------------------------------


def test_show_says_a_step_waits_for_a_worker() -> None:
    workflow = parse_manifest(PAY, "yaml", "<test>")
    state, _ = _start(workflow, {"amount": 10})
    plan = tuple(
        PlannedStep(name=n, action=s.action, needs=s.needs) for n, s in workflow.steps.items()
    )
    queue = ActionQueue(action="billing.charge", consumer="natsflow-action-billing_charge")
    idle = execution_view(state, 3, 2, None, plan, {"billing.charge": replace_q(queue, 12, 0)})
    assert idle.steps["charge"].status == "scheduled"
    assert idle.steps["charge"].reason == "waiting for a worker of billing.charge, 12 queued"
    served = execution_view(state, 3, 2, None, plan, {"billing.charge": replace_q(queue, 12, 1)})
    assert served.steps["charge"].reason is None
    taken = execution_view(state, 3, 2, None, plan, {"billing.charge": replace_q(queue, 0, 0)})
    assert taken.steps["charge"].reason is None
    gone = ActionQueue(action="billing.charge", consumer="c", exists=False)
    missing = execution_view(state, 3, 2, None, plan, {"billing.charge": gone})
    assert "its consumer c is missing" in (missing.steps["charge"].reason or "")
    assert execution_view(state, 3, 2, None, plan).steps["charge"].reason is None


def replace_q(queue: ActionQueue, queued: int, pulling: int) -> ActionQueue:
    return replace(queue, queued=queued, pulling=pulling)
