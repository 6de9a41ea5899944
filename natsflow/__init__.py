"""natsflow: durable workflows on NATS JetStream.

The public API is what this module exports (pinned by a test): ``Client``, the
client of a running natsflow service over NATS, the errors it raises and the
replies it answers with::

    import natsflow

    async with await natsflow.Client.connect("nats://127.0.0.1:4222") as client:
        started = await client.start("hello", {"name": "Ada"})
        view = await client.wait(started.execution_id)

The folders beside it are the subpackages, one layer each: ``natsflow.events``
(types, fold, codec) <- ``natsflow.manifests`` (schema, the manifest decider) <-
``natsflow.actors.jetstream`` (the JetStream adapter) <- ``natsflow.actors``
<- ``natsflow.service`` (CLI, HTTP, admin API, client, process wiring).
Importing ``natsflow`` loads the client and the code-workflow API (``workflow``,
``step``, ``sleep``, ``wait_for_signal``, ``start_child``, ``gather``, ``now``,
``uuid``, ``patched``, ``logger``, and ``step_context`` for a running step), not
the engine; ``natsflow.Worker`` (a code app's process, embedded) loads it when
first used.
"""

from typing import TYPE_CHECKING, Any

from natsflow.code import (
    NotStorable,
    StepContext,
    StepFailed,
    gather,
    logger,
    now,
    patched,
    sleep,
    start_child,
    step,
    step_context,
    uuid,
    wait_for_signal,
    workflow,
)
from natsflow.events.errors import (
    Conflict,
    InputError,
    InternalError,
    InvalidInput,
    ManifestError,
    NatsflowError,
    NondeterminismError,
    NotFound,
    Unavailable,
)
from natsflow.events.model import AttemptRecord, ExecutionStatus
from natsflow.events.replies import TriggerReply
from natsflow.events.views import (
    ExecutionSummary,
    ExecutionView,
    ResumePoint,
    Started,
    StepView,
)
from natsflow.service.client import Client
from natsflow.service.protocol import (
    CancelRequested,
    Deployed,
    History,
    Signalled,
    SnapshotInfo,
    WorkflowVersion,
)

if TYPE_CHECKING:
    from natsflow.actors.apps import Worker


def __getattr__(name: str) -> Any:
    # The engine loads only when a process runs an app (``natsflow.Worker``).
    if name == "Worker":
        from natsflow.actors.apps import Worker

        return Worker
    raise AttributeError(f"module 'natsflow' has no attribute {name!r}")


__all__ = [
    "AttemptRecord",
    "CancelRequested",
    "Client",
    "Conflict",
    "Deployed",
    "ExecutionStatus",
    "ExecutionSummary",
    "ExecutionView",
    "History",
    "InputError",
    "InternalError",
    "InvalidInput",
    "ManifestError",
    "NatsflowError",
    "NondeterminismError",
    "NotFound",
    "NotStorable",
    "ResumePoint",
    "Signalled",
    "SnapshotInfo",
    "Started",
    "StepContext",
    "StepFailed",
    "StepView",
    "TriggerReply",
    "Unavailable",
    "Worker",
    "WorkflowVersion",
    "gather",
    "logger",
    "now",
    "patched",
    "sleep",
    "start_child",
    "step",
    "step_context",
    "uuid",
    "wait_for_signal",
    "workflow",
]
