"""Why ``show`` says a code app's step has not started: its app has no process pulling,
named with the app's own steps consumer, never as a worker of a custom action."""

from __future__ import annotations

from natsflow.events.queues import ActionQueue, worker_wanted

APP = "natsflow-app-docs-steps"


def test_a_code_steps_queue_without_a_puller_asks_for_a_process_of_the_app() -> None:
    queue = ActionQueue(action="docs.fetch", consumer=APP, queued=3, pulling=0)
    reason = worker_wanted(queue)
    assert reason is not None
    assert "process of app docs" in reason
    assert "natsflow worker --app" in reason
    assert "docs.fetch" in reason
    assert "worker of docs.fetch" not in reason


def test_a_code_steps_queue_that_never_existed_says_no_process_ran() -> None:
    reason = worker_wanted(ActionQueue(action="docs.fetch", consumer=APP, exists=False))
    assert reason is not None
    assert "none ever ran" in reason
    assert "deploy the workflow" not in reason


def test_a_pulled_code_steps_queue_needs_nothing() -> None:
    assert (
        worker_wanted(ActionQueue(action="docs.fetch", consumer=APP, queued=2, pulling=1)) is None
    )


def test_a_custom_action_queue_is_told_as_before() -> None:
    queue = ActionQueue(
        action="billing.charge", consumer="natsflow-action-billing_charge", queued=1
    )
    assert worker_wanted(queue) == "waiting for a worker of billing.charge, 1 queued"
