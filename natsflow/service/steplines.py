"""How the CLI prints an execution's steps, one line each, for ``show`` and ``watch``.

It reads the plain JSON values of an ``ExecutionView`` (what ``show --json``
prints) and tolerates what it does not know: a status or field a newer service
adds is printed as it comes, or not at all. What a status means is
``events.plan``'s; to print a new one differently, extend ``status_detail``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

# Statuses after which a step's progress is old news.
_DONE = frozenset({"completed", "skipped", "blocked", "not_run", "failed", "cancelled"})
LABEL_WIDTH = 24
STATUS_WIDTH = 10


def clock(value: float) -> str:
    """A time of day, for what happens soon (a retry, the end of a sleep)."""
    return dt.datetime.fromtimestamp(value).strftime("%H:%M:%S")


def status_detail(step: Mapping[str, Any]) -> str:
    """What a step's status leaves out: its progress, when it wakes, why it is so."""
    status = step.get("status")
    parts = []
    if step.get("progress") and status not in _DONE:
        parts.append(f"[{step['progress']}]")
    if status == "waiting" and isinstance(step.get("due"), int | float):
        parts.append(f"until {clock(step['due'])}")
    if status == "waiting" and step.get("waiting_for"):
        parts.append(f"for {step['waiting_for']}")
    if step.get("reason"):
        parts.append(str(step["reason"]))
    elif step.get("error") and status != "completed":
        parts.append(f"error: {step['error']}")
    if step.get("child"):
        parts.append(f"child: {step['child']}")
    return "  ".join(parts)


def status_text(step: Mapping[str, Any]) -> str:
    """A step's status in words: ``blocked: household failed``, ``running: [50%]``."""
    detail = status_detail(step)
    return f"{step.get('status', '?')}: {detail}" if detail else str(step.get("status", "?"))


def step_line(key: str, step: Mapping[str, Any]) -> str:
    """One step as a line: its key (a fan-out child indented under its parent), status,
    attempts and time taken, then the detail."""
    label = f"  {key}" if step.get("parent") else key
    line = f"  {label:{LABEL_WIDTH}} {step.get('status', '?'):{STATUS_WIDTH}}"
    attempts = step.get("attempts") or ()
    if attempts:
        line += f" attempts {len(attempts)}"
    started, finished = step.get("started_at"), step.get("finished_at")
    if isinstance(started, int | float) and isinstance(finished, int | float):
        line += f" {1000 * (finished - started):.0f}ms"
    if detail := status_detail(step):
        line += f"  {detail}"
    return line.rstrip()


def step_lines(view: Mapping[str, Any]) -> list[str]:
    """Every step of ``view`` as a line, in the view's order (children after their parent)."""
    steps: Mapping[str, Mapping[str, Any]] = view.get("steps") or {}
    return [step_line(key, step) for key, step in steps.items()]


def headline(view: Mapping[str, Any]) -> str:
    """The execution in one line: id, workflow, status, steps done, current steps, error."""
    line = (
        f"{view.get('execution_id')}  {view.get('workflow')}  {view.get('status')}"
        f"  steps {view.get('steps_done')}/{view.get('steps_total')}"
    )
    if view.get("error"):
        line += f"  error: {view['error']}"
    return line
