"""Custom actions' task queues: one durable pull consumer each on ``NATSFLOW_TASKS``.

A custom action (``manifests.custom``) ``billing.charge`` has its tasks on
``natsflow.task.billing_charge`` and its consumer ``natsflow-action-billing_charge``,
filtering exactly that subject. ``NATSFLOW_TASKS`` is a work queue, which refuses
consumers whose filters overlap: natsflow's own workers (``natsflow-workers``)
filter the built-in actions' subjects one by one, so no custom action's task ever
reaches them, and a team's worker bound to its action's consumer gets exactly
that action's tasks.

The consumer is made when a manifest using the action is deployed
(``ensure_action_consumers``); a task published before that waits in the stream
(a work queue keeps a message until a consumer takes it).
"""

from __future__ import annotations

from collections.abc import Iterable

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import TASKS_STREAM, app_steps_consumer, task_subject
from natsflow.events.errors import Conflict
from natsflow.events.queues import ActionQueue
from natsflow.manifests.custom import action_of_token, action_token, is_custom_action
from natsflow.manifests.schema import Workflow

__all__ = [
    "CONSUMER_PREFIX",
    "action_consumer",
    "action_queue",
    "action_queues",
    "app_steps_queue",
    "custom_actions",
    "ensure_action_consumers",
]

CONSUMER_PREFIX = "natsflow-action-"
# The metadata key naming the action a consumer serves (so does its name).
ACTION_METADATA = "natsflow_action"


def action_consumer(action: str) -> str:
    """The durable consumer of a custom action: ``natsflow-action-billing_charge``."""
    return CONSUMER_PREFIX + action_token(action)


def custom_actions(workflow: Workflow) -> tuple[str, ...]:
    """The custom actions ``workflow``'s steps use, in order of first use."""
    found = dict.fromkeys(s.action for s in workflow.steps.values() if is_custom_action(s.action))
    return tuple(found)


def consumer_config(action: str, ack_wait: float) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=action_consumer(action),
        description=f"natsflow tasks of the custom action {action}",
        filter_subject=task_subject(action),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20000,
        max_waiting=512,
        metadata={ACTION_METADATA: action},
    )


async def ensure_action_consumers(
    js: JetStreamContext, actions: Iterable[str], *, ack_wait: float
) -> None:
    """Create (or bring up to date) the consumer of each custom action in ``actions``.

    Raises ``Unavailable`` when NATS does not answer, ``Conflict`` when another consumer
    already takes the action's tasks (a code app's steps are the actions ``<app>.<step>``).
    """
    for action in actions:
        with unavailable_as(f"create the consumer {action_consumer(action)} on {TASKS_STREAM}"):
            try:
                await js.add_consumer(TASKS_STREAM, consumer_config(action, ack_wait))
            except BadRequestError as exc:
                if exc.err_code != _NOT_UNIQUE:
                    raise
                raise Conflict(
                    f"action {action}: its tasks' subject {task_subject(action)} is already"
                    f" consumed by another consumer of {TASKS_STREAM} (a code app's step"
                    " <app>.<step> is one): name the action differently"
                ) from None


_NOT_UNIQUE = 10100  # "filtered consumer not unique on workqueue stream"


async def action_queue(js: JetStreamContext, action: str) -> ActionQueue:
    """What the server says of ``action``'s consumer now (``exists`` False if it has none)."""
    consumer = action_consumer(action)
    with unavailable_as(f"read the consumer {consumer} on {TASKS_STREAM}"):
        try:
            info = await js.consumer_info(TASKS_STREAM, consumer)
        except NotFoundError:
            return ActionQueue(action=action, consumer=consumer, exists=False)
    return _queue(action, info)


async def action_queues(js: JetStreamContext) -> dict[str, ActionQueue]:
    """Every custom action's queue, by action, from the consumers on ``NATSFLOW_TASKS``."""
    with unavailable_as(f"list the consumers on {TASKS_STREAM}"):
        try:
            infos = await js.consumers_info(TASKS_STREAM)
        except NotFoundError:
            return {}
    out: dict[str, ActionQueue] = {}
    for info in infos:
        name = info.name or ""
        if name.startswith(CONSUMER_PREFIX):
            action = action_of_token(name[len(CONSUMER_PREFIX) :])
            out[action] = _queue(action, info)
    return out


async def app_steps_queue(js: JetStreamContext, app: str, action: str) -> ActionQueue:
    """The queue a code app's step ``action`` waits in: the app's steps consumer
    (``natsflow-app-<app>-steps``, every step of the app; ``exists`` False until a
    process of the app has started once)."""
    consumer = app_steps_consumer(app)
    with unavailable_as(f"read the consumer {consumer} on {TASKS_STREAM}"):
        try:
            info = await js.consumer_info(TASKS_STREAM, consumer)
        except NotFoundError:
            return ActionQueue(action=action, consumer=consumer, exists=False)
    return _queue(action, info, consumer)


def _queue(action: str, info: api.ConsumerInfo, consumer: str | None = None) -> ActionQueue:
    return ActionQueue(
        action=action,
        consumer=consumer or action_consumer(action),
        queued=info.num_pending or 0,
        pulling=info.num_waiting or 0,
        in_hand=info.num_ack_pending or 0,
    )
