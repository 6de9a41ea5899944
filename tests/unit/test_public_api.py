"""``from natsflow import ...``: the public names, pinned, and a light import."""

from __future__ import annotations

import subprocess
import sys

import natsflow

PUBLIC = [
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


def test_the_exported_names_are_pinned() -> None:
    assert sorted(natsflow.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(natsflow, name) is not None, name


def test_every_error_a_client_raises_is_a_natsflow_error() -> None:
    for error in (
        natsflow.InputError,
        natsflow.InvalidInput,
        natsflow.ManifestError,
        natsflow.NotFound,
        natsflow.Conflict,
        natsflow.Unavailable,
        natsflow.InternalError,
    ):
        assert issubclass(error, natsflow.NatsflowError)


HEAVY = (
    "natsflow.actors",
    "natsflow.service.app",
    "natsflow.service.http",
    "natsflow.service.cli",
    "natsflow.service.admin",
    "natsflow.service.operations",
    "aiohttp.web",
    "prometheus_client",
    "aiosqlite",
)
"""Modules (and their submodules) that ``import natsflow`` must not load: the engine."""


def test_importing_natsflow_loads_the_client_not_the_engine() -> None:
    probe = "import sys, natsflow; print(' '.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = done.stdout.split()
    assert "natsflow.service.client" in loaded
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)] == []
