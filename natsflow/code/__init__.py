"""Code workflows: ``@workflow`` and ``@step`` in Python, replayed from the event history.

Pure parts (the API, values, the decider) import ``events`` and ``manifests``
only; the process that runs an app lives in ``natsflow.actors.apps``.
"""

from natsflow.code.api import (
    NotInWorkflow,
    StepFailed,
    gather,
    logger,
    now,
    patched,
    sleep,
    start_child,
    step,
    uuid,
    wait_for_signal,
    workflow,
)
from natsflow.code.definition import CodeApp, load_app
from natsflow.code.replay import CodeDecider
from natsflow.code.step_context import NotInStep, StepContext, step_context
from natsflow.code.values import NotStorable

__all__ = [
    "CodeApp",
    "CodeDecider",
    "NotInStep",
    "NotInWorkflow",
    "NotStorable",
    "StepContext",
    "StepFailed",
    "gather",
    "load_app",
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
