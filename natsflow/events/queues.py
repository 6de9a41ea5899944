"""What ``show`` is told about a custom action's task queue (read from its consumer).

Pure facts, read at the edge (``actors.jetstream.action_queues``) and passed in,
so that the view of a step can say why it has not started:
``waiting for a worker of billing.charge, 12 queued``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

Count = Annotated[int, Meta(ge=0)]


class ActionQueue(msgspec.Struct, frozen=True, kw_only=True):
    """A custom action's durable consumer on ``NATSFLOW_TASKS``, as the server reports it."""

    action: str
    consumer: str
    exists: bool = True
    queued: Count = 0  # tasks no worker has taken yet (num_pending)
    pulling: Count = 0  # pull requests waiting for a task: workers ready (num_waiting)
    in_hand: Count = 0  # tasks taken and not acked yet (num_ack_pending)


def worker_wanted(queue: ActionQueue) -> str | None:
    """Why a scheduled step of ``queue.action`` has not started, if it is for want of a
    worker: no worker pulls while tasks are queued (or the consumer is gone)."""
    app = _app_of(queue.consumer)
    if app is not None:  # a code app's step: its own processes serve it
        if not queue.exists:
            return f"waiting for a process of app {app} (natsflow worker --app): none ever ran"
        if queue.pulling == 0 and queue.queued > 0:
            return (
                f"waiting for a process of app {app} to run {queue.action}"
                f" (natsflow worker --app), {queue.queued} steps of the app queued"
            )
        return None
    if not queue.exists:
        return (
            f"waiting for a worker of {queue.action}: its consumer {queue.consumer} is missing"
            " (deploy the workflow again to create it)"
        )
    if queue.pulling == 0 and queue.queued > 0:
        return f"waiting for a worker of {queue.action}, {queue.queued} queued"
    return None


def _app_of(consumer: str) -> str | None:
    """The app of a code app's steps consumer (``natsflow-app-<app>-steps``), else None."""
    if consumer.startswith("natsflow-app-") and consumer.endswith("-steps"):
        return consumer[len("natsflow-app-") : -len("-steps")]
    return None
