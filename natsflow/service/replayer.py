"""Check recorded histories against the current code, before deploying it.

``check_history(history, app)`` replays a code execution's stored events
(``natsflow history ID --json``, add ``--all`` once snapshots compacted it, or
``Client.history(ID)``, or a list of events) against the app's code as a worker
would on activation: every durable call the code makes at a position must be the
one recorded there, and a completed execution must end where it ended. A
difference raises ``NondeterminismError`` (execution, position, the step the code
calls there and the one recorded); a running execution with such a history would
be parked by the new code. ``natsflow replay FILE... --app module`` runs it from CI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from msgspec.structs import replace

from natsflow.code.definition import CodeApp, load_app
from natsflow.code.replay import CodeDecider, _Run, positions
from natsflow.events.errors import NondeterminismError
from natsflow.events.fold import fold
from natsflow.events.model import (
    AnyEvent,
    ExecutionState,
    StepScheduled,
    TimerStarted,
    WaitStarted,
)

__all__ = ["Checked", "HistoryError", "check_files", "check_history", "read_events"]

AppLike = CodeApp | ModuleType | str | Sequence[ModuleType | str]
_NEW_CALLS = (StepScheduled, TimerStarted, WaitStarted)


class HistoryError(ValueError):
    """A history that cannot be checked (not JSON, no start, an unknown workflow)."""


@dataclass(frozen=True, slots=True)
class Checked:
    """A history the code replays: its execution, workflow, status and calls replayed."""

    execution: str
    workflow: str
    status: str
    calls: int


def read_events(history: Any) -> list[AnyEvent]:
    """The events of ``history``: ``history --json``'s object (or its bytes or text, or a
    ``natsflow.History``), or a list of events (dicts or event structs)."""
    if isinstance(history, bytes | str):
        try:
            history = msgspec.json.decode(history)
        except msgspec.DecodeError as exc:
            raise HistoryError(f"not a JSON history: {exc}") from None
    if isinstance(history, dict):
        history = history.get("events")
    elif hasattr(history, "events"):
        history = history.events
    if not isinstance(history, list | tuple):
        raise HistoryError("expected `natsflow history ID --json` output or a list of events")
    events: list[AnyEvent] = []
    try:
        for event in history:
            is_event = isinstance(event, msgspec.Struct)
            events.append(event if is_event else msgspec.convert(event, AnyEvent))
    except msgspec.ValidationError as exc:
        raise HistoryError(f"an event does not decode: {exc}") from None
    return events


def _app(app: AppLike) -> CodeApp:
    if isinstance(app, CodeApp):
        return app
    if isinstance(app, ModuleType | str):
        return load_app([app])
    return load_app(list(app))


def check_history(history: Any, app: AppLike) -> Checked:
    """Replay ``history`` against ``app``'s code (see the module docstring)."""
    events = read_events(history)
    if not events or type(events[0]).__struct_config__.tag != "execution_started":
        first = type(events[0]).__struct_config__.tag if events else "nothing"
        raise HistoryError(
            f"the history starts with {first}, not execution_started: a snapshot compacted"
            " it (use `natsflow history ID --all --json`)"
        )
    state = fold(events)
    code = _app(app)
    definition = code.workflows.get(state.workflow)
    if definition is None:
        raise HistoryError(
            f"execution {state.execution_id} ran workflow {state.workflow!r}, which app"
            f" {code.name} does not define (it has: {', '.join(sorted(code.workflows))})"
        )
    recorded = positions(state)
    run = _Run(CodeDecider(code, definition), replace(state, status="running"), _last_at(events))
    run.drive()  # raises NondeterminismError where the code departs from the history
    if state.status == "completed":
        _check_ended(state, run)
    run.close()
    return Checked(state.execution_id, state.workflow, state.status, len(recorded))


def _check_ended(state: ExecutionState, run: _Run) -> None:
    """A completed execution's code must not call anything after its recorded end."""
    new = next((e for e in run.events if isinstance(e, _NEW_CALLS)), None)
    if new is not None:
        position = int(new.step.rpartition("#")[2] or -1)
        raise NondeterminismError(
            state.execution_id,
            new.step,
            new.step.rpartition("#")[0],
            "the end of the workflow",
            position,
        )


def _last_at(events: Sequence[AnyEvent]) -> float:
    return max((getattr(e, "at", 0.0) for e in events), default=0.0)


def check_files(
    paths: Iterable[str | Path], app: AppLike
) -> list[tuple[Path, Checked | Exception]]:
    """``check_history`` of each file (a directory: its ``*.json``); each outcome."""
    code = _app(app)
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    out: list[tuple[Path, Checked | Exception]] = []
    for file in files:
        try:
            out.append((file, check_history(file.read_bytes(), code)))
        except (NondeterminismError, HistoryError, OSError) as exc:
            out.append((file, exc))
    return out
