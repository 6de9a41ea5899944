"""Testing support for code and manifest workflows.

- ``WorkflowTestEnv``: run workflows against a real embedded nats-server and an
  in-process natsflow, with a skippable clock for durable timers (``skip``,
  ``result(..., skip_timers=True)``).
- ``check_history`` / ``check_files``: replay recorded histories (``natsflow
  history ID --json``) against the current code and raise ``NondeterminismError``
  where it departs (``natsflow replay FILE --app module`` from CI).
"""

from natsflow.actors.jetstream.pending_timers import PendingTimer
from natsflow.service.replayer import Checked, HistoryError, check_files, check_history, read_events
from natsflow.testing.env import WorkflowFailed, WorkflowTestEnv

__all__ = [
    "Checked",
    "HistoryError",
    "PendingTimer",
    "WorkflowFailed",
    "WorkflowTestEnv",
    "check_files",
    "check_history",
    "read_events",
]
