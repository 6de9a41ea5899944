"""The trigger stream and its consumers: JetStream captures every deployed trigger subject.

``NATSFLOW_TRIGGERS`` (work queue) listens on the trigger subjects of every
deployed workflow, enabled or not, so a message published while no natsflow
instance runs, or while its workflow is disabled, waits there. Each enabled
workflow has its own durable consumer, ``natsflow-trigger-<workflow>``, filtering
its subjects (deploys that would make two workflows' subjects overlap are
refused, so the filters never overlap, as a work queue requires); disabling a
workflow deletes its consumer and keeps its messages.
"""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import ensure_stream

TRIGGERS_STREAM = "NATSFLOW_TRIGGERS"
# Always captured, never published to: a stream needs one subject even with no triggers.
IDLE_SUBJECT = "natsflow.trigger.idle"


def trigger_consumer(workflow: str) -> str:
    return f"natsflow-trigger-{workflow}"


async def ensure_trigger_stream(
    js: JetStreamContext, subjects: list[str], *, exact: bool = True
) -> None:
    """The trigger stream, capturing exactly ``subjects`` (plus the idle subject); with
    ``exact`` False it only adds them to what it captures already."""
    config = api.StreamConfig(
        name=TRIGGERS_STREAM,
        subjects=[IDLE_SUBJECT, *sorted(set(subjects))],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.WORK_QUEUE,
        duplicate_window=120,
        description="natsflow trigger messages, until they start their executions",
    )
    with unavailable_as(f"provision stream {TRIGGERS_STREAM}"):
        try:
            info = await js.stream_info(TRIGGERS_STREAM)
        except NotFoundError:
            info = None
        # Updated only when the subjects differ. Instances following deploys only add
        # subjects: one that read the deployed workflows just before a deploy must not
        # take away the subjects that deploy has just added (its messages would be lost).
        current = sorted(info.config.subjects or []) if info is not None else []
        if not exact:
            config.subjects = sorted({*current, *(config.subjects or [])})
        if info is None or current != sorted(config.subjects or []):
            await ensure_stream(js, config, keep_replicas=True)


async def ensure_trigger_consumer(
    js: JetStreamContext, workflow: str, subjects: list[str], ack_wait: float
) -> None:
    config = api.ConsumerConfig(
        durable_name=trigger_consumer(workflow),
        filter_subjects=sorted(set(subjects)),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=1000,
        max_waiting=512,
    )
    with unavailable_as(f"provision the trigger consumer of {workflow}"):
        await js.add_consumer(TRIGGERS_STREAM, config)


async def delete_trigger_consumer(js: JetStreamContext, workflow: str) -> None:
    # NotFound: deleted already (by another instance)
    with (
        unavailable_as(f"delete the trigger consumer of {workflow}"),
        contextlib.suppress(NotFoundError),
    ):
        await js.delete_consumer(TRIGGERS_STREAM, trigger_consumer(workflow))
