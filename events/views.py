"""Read views of an execution: what ``ls`` lists and ``show`` prints, derived from its state.

Views are persisted (summaries in KV) and sent to clients, so they decode
leniently: a field added by a newer natsflow is ignored by an older reader.
"""

from __future__ import annotations

import msgspec

from natsflow.events.model import ExecutionState


class ExecutionSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The row ``ls`` shows, kept in the KV bucket ``natsflow_executions``."""

    execution_id: str
    workflow: str
    version: str
    status: str
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    failed_step: str | None = None


def summary_of(state: ExecutionState) -> ExecutionSummary:
    return ExecutionSummary(
        execution_id=state.execution_id,
        workflow=state.workflow,
        version=state.version,
        status=state.status,
        started_at=state.started_at,
        finished_at=state.finished_at,
        error=state.error,
        failed_step=state.failed_step,
    )
