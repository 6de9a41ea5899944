"""``natsflow watch ID``: an execution's progress, live, one line per step.

On a terminal the headline and the step lines are redrawn in place (ANSI: cursor
up, erase line), cut to the terminal's size. Anywhere else (a pipe, a file, a CI
log) a line is appended only when it changed: the headline when the status,
steps done or error change, a step's line when that step's does. ``--json``
appends each new view as one JSON line. The views come from ``Client.watch``.

``follow`` answers the exit code: 0 when the execution completed, 1 when it
failed or was cancelled.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from contextlib import aclosing
from typing import Any, Protocol, TextIO

import msgspec
import orjson

from natsflow.service.client import Client
from natsflow.service.steplines import headline, step_line

View = Mapping[str, Any]


class Screen(Protocol):
    """Where ``follow`` shows each new view (plain JSON values of an ``ExecutionView``)."""

    def draw(self, view: View) -> None: ...


class LiveScreen:
    """A terminal: the lines drawn last are replaced by the new ones."""

    def __init__(
        self, out: TextIO, size: Callable[[], os.terminal_size] = shutil.get_terminal_size
    ) -> None:
        self._out = out
        self._size = size
        self._drawn = 0

    def draw(self, view: View) -> None:
        width, height = self._size()
        lines = frame(view, width, height)
        # Back to the first line drawn last time; each line erased before it is written,
        # and whatever the last frame had below this one cleared.
        up = f"\r\x1b[{self._drawn}A" if self._drawn else ""
        self._out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J")
        self._out.flush()
        self._drawn = len(lines)


class PlainScreen:
    """A pipe or a file: a line is appended only when it changed since it was last printed."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._printed: dict[str | None, str] = {}  # None: the headline

    def draw(self, view: View) -> None:
        lines = [(None, headline(view))]
        lines += [(key, step_line(key, step)) for key, step in (view.get("steps") or {}).items()]
        for key, line in lines:
            if self._printed.get(key) != line:
                self._printed[key] = line
                self._out.write(line + "\n")
        self._out.flush()


class JsonScreen:
    """``--json``: each view as one line of JSON."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def draw(self, view: View) -> None:
        self._out.write(orjson.dumps(view).decode() + "\n")
        self._out.flush()


def screen_for(out: TextIO, *, as_json: bool) -> Screen:
    """JSON lines if asked, redrawn lines on a terminal, appended lines otherwise."""
    if as_json:
        return JsonScreen(out)
    return LiveScreen(out) if out.isatty() else PlainScreen(out)


def frame(view: View, width: int, height: int) -> list[str]:
    """The lines of one redraw, at most ``height - 1`` of at most ``width - 1`` characters
    (a line as wide as the terminal, or one more line than it has, would scroll it and
    the next redraw would start in the wrong place). When the steps do not fit, the
    completed fan-out children go first, then the last steps."""
    steps: Mapping[str, Mapping[str, Any]] = view.get("steps") or {}
    rows = [(step, step_line(key, step)) for key, step in steps.items()]
    room = max(height - 2, 2)  # below the headline
    lines = [line for _, line in rows]
    if len(rows) > room:
        done = [r for r in rows if r[0].get("parent") and r[0].get("status") == "completed"]
        lines = [line for r in rows if r not in done for line in (r[1],)][: room - 1]
        lines.append(f"  ... {len(rows) - len(lines)} more steps")
    cut = max(width - 1, 10)
    return [line[:cut] for line in (headline(view), *lines)]


async def follow(client: Client, execution_id: str, screen: Screen) -> int:
    """Show the execution's views on ``screen`` until it ends; 0 if it completed, else 1."""
    status = None
    async with aclosing(client.watch(execution_id)) as views:
        async for view in views:
            screen.draw(msgspec.to_builtins(view))
            status = view.status
    return 0 if status == "completed" else 1
