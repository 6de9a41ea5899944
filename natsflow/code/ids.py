"""Ids of code executions: ``<app>==<workflow>-<ulid>``, so routing needs no lookup.

The app in front sends every message for the execution (start, results, timers,
signals, children's ends) to the app's own subjects (``actors.jetstream.topology``),
which the app's processes consume. ``==`` is in no workflow name or generated id,
and a child id (``<parent>=<step>``) has a single ``=`` after a ULID, so a manifest
execution's id never reads as a code one's.
"""

from __future__ import annotations

from typing import Any


def code_execution_id(app: str, execution: str) -> str:
    """``execution`` (a generated id) as an execution of ``app``."""
    return f"{app}=={execution}"


def app_of(execution: str) -> str | None:
    """The app of a code execution id (``<app>==<workflow>-<ulid>``), else None."""
    head, sep, _ = execution.partition("==")
    return head if sep and head and "=" not in head else None


def child_id(parent: str, call: Any, position: int, code_child: str | None) -> str:
    """A child's id: derived from the parent and the call, so it is started once; a
    child that is a code workflow of ``code_child`` (an app) is routed to that app."""
    base = parent.partition("==")[2] if app_of(parent) else parent
    own = f"{base}={call.name}={position}"
    return f"{code_child}=={own}" if code_child else own
