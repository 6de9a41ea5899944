"""How ``show`` and ``watch`` print steps: one line each, redrawn or appended."""

from __future__ import annotations

import io
import os
from typing import Any

import orjson

from natsflow.service.steplines import headline, status_text, step_line, step_lines
from natsflow.service.watch import JsonScreen, LiveScreen, PlainScreen, frame, screen_for


def step(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, "attempts": [], "parent": None, **fields}


def view(status: str = "running", /, **steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "execution_id": "ex-1",
        "workflow": "w",
        "status": status,
        "steps_done": 1,
        "steps_total": 3,
        "error": None,
        "steps": steps,
    }


def test_status_text_says_why() -> None:
    assert status_text(step("blocked", reason="household failed")) == "blocked: household failed"
    assert status_text(step("pending", reason="waits for a, b")) == "pending: waits for a, b"
    assert status_text(step("running", progress="50%")) == "running: [50%]"
    assert status_text(step("completed", progress="100%")) == "completed"
    assert status_text(step("failed", error="disk full")) == "failed: error: disk full"
    assert status_text(step("waiting", due=0.0, error="x")).startswith("waiting: until ")
    # unknown statuses and missing fields are printed as they come
    assert status_text({"status": "paused_somehow"}) == "paused_somehow"
    assert status_text({}) == "?"


def test_a_step_line_has_attempts_time_and_detail() -> None:
    done = step("completed", attempts=[{}, {}], started_at=1.0, finished_at=1.25)
    assert step_line("a", done) == f"  {'a':24} {'completed':10} attempts 2 250ms"
    blocked = step_line("b", step("blocked", reason="a failed", error="needs a, which failed"))
    assert blocked.endswith("blocked     a failed")  # the reason, not the fold's words


def test_children_are_indented_under_their_parent() -> None:
    lines = step_lines(
        view(
            sync=step("fanned_out"),
            **{
                "sync[a]": step("completed", parent="sync"),
                "sync[b]": step("pending", parent="sync"),
            },
        )
    )
    assert [line.split()[0] for line in lines] == ["sync", "sync[a]", "sync[b]"]
    assert lines[1].startswith("    sync[a]")
    assert lines[0].startswith("  sync ")


def test_headline_names_the_error() -> None:
    failed = {**view("failed"), "error": "step a failed: boom"}
    assert headline(failed) == "ex-1  w  failed  steps 1/3  error: step a failed: boom"


def test_plain_screen_prints_a_line_only_when_it_changed() -> None:
    out = io.StringIO()
    screen = PlainScreen(out)
    screen.draw(view(a=step("scheduled"), b=step("pending", reason="waits for a")))
    screen.draw(view(a=step("scheduled"), b=step("pending", reason="waits for a")))
    screen.draw(view(a=step("completed"), b=step("scheduled")))
    screen.draw({**view("completed", a=step("completed"), b=step("completed"))})
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["ex-1", "a", "b", "a", "b", "ex-1", "b"]
    assert "\x1b" not in out.getvalue()


def test_live_screen_redraws_in_place() -> None:
    out = io.StringIO()
    screen = LiveScreen(out, size=lambda: os.terminal_size((40, 20)))
    screen.draw(view(a=step("scheduled"), b=step("pending")))
    first = out.getvalue()
    assert first.count("\n") == 3
    assert "\x1b[2K" in first
    assert "A" not in first.split("ex-1")[0]  # nothing to move up over the first time
    screen.draw(view(a=step("completed"), b=step("scheduled")))
    second = out.getvalue()[len(first) :]
    assert second.startswith("\r\x1b[3A")  # back over the three lines drawn
    assert second.endswith("\x1b[J")
    assert all(len(line.split("\n")[0]) < 40 for line in second.split("\x1b[2K")[1:])


def test_a_frame_fits_the_terminal() -> None:
    children = {f"s[{i}]": step("completed", parent="s") for i in range(30)}
    children["s[30]"] = step("scheduled", parent="s")
    lines = frame(view(s=step("fanned_out"), after=step("pending"), **children), 30, 10)
    assert len(lines) <= 9
    assert all(len(line) <= 29 for line in lines)
    # completed children make room first: the running child and the later step stay
    assert any("s[30]" in line for line in lines)
    assert any(line.lstrip().startswith("after") for line in lines)
    assert "more steps" in lines[-1]


def test_json_screen_prints_one_view_per_line() -> None:
    out = io.StringIO()
    JsonScreen(out).draw(view(a=step("scheduled")))
    assert orjson.loads(out.getvalue())["steps"]["a"]["status"] == "scheduled"


def test_screen_for_a_pipe_is_plain() -> None:
    assert isinstance(screen_for(io.StringIO(), as_json=False), PlainScreen)
    assert isinstance(screen_for(io.StringIO(), as_json=True), JsonScreen)
