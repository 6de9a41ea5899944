"""``show`` tells the whole story, and ``natsflow watch`` follows it live (real server)."""

from __future__ import annotations

import os
import pty
from contextlib import aclosing, suppress
from functools import partial
from itertools import pairwise
from pathlib import Path

import anyio
import msgspec
from anyio.streams.text import TextReceiveStream

from natsflow.events.views import ExecutionView
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import natsflow_script, running
from tests.integration.test_cli import ROOT, natsflow

# The first step reports progress, then waits for the test to create its gate file.
GATE = "echo '[PROGRESS] waiting for the gate'; while [ ! -e $0 ]; do sleep 0.02; done"
WATCHED = f"""
name: watched
steps:
  first:
    action: shell
    timeout: 30s
    with: {{argv: [sh, -c, "{GATE}", "${{{{ input.gate }}}}"]}}
  second:
    action: noop
    needs: [first]
  third:
    action: noop
    after: [second]
"""

FAILS = """
name: fails
steps:
  first:
    action: noop
  boom:
    action: python
    needs: [first]
    with: {function: always_fails}
  household:
    action: noop
    needs: [boom]
  person:
    action: noop
    needs: [household]
  slow:
    action: shell
    with: {argv: [python3, -c, "import time; time.sleep(0.5)"]}
"""

# Each entity after a failed one is blocked, naming it.
FAN_OUT = """
name: entities
steps:
  sync:
    action: python
    with: {function: "${{ item.fn }}"}
    retry: {attempts: 3, backoff: fixed, delay: 10ms}
    on_failure: continue
    for_each:
      items: "${{ input.entities }}"
      key: "${{ item.k }}"
      needs: "${{ item.needs }}"
  report:
    action: noop
    after: [sync]
"""
ENTITIES = [
    {"k": "campus", "needs": [], "fn": "flaky_third_time"},
    {"k": "household", "needs": ["campus"], "fn": "always_fails"},
    {"k": "person", "needs": ["household"], "fn": "flaky_third_time"},
    {"k": "address", "needs": ["person"], "fn": "flaky_third_time"},
    {"k": "tags", "needs": [], "fn": "flaky_third_time"},
]


async def test_watch_of_an_execution_that_completes_exits_0_after_every_step(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with running(nats_server) as engine:
        await engine.deploy(WATCHED)
        execution = await engine.start("watched", {"gate": str(gate)})
        env = {**os.environ, "NATS_URL": engine.url, "NATSFLOW_LOG_LEVEL": "WARNING"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        command = [natsflow_script(), "watch", execution]
        lines: list[str] = []
        with anyio.fail_after(30):
            async with await anyio.open_process(command, env=env) as process:
                assert process.stdout is not None
                async for line in TextReceiveStream(process.stdout):
                    lines.extend(line.splitlines())
                    # the worker's progress shown: let the step finish
                    if any(row.split()[:2] == ["first", "running"] for row in lines):
                        gate.touch()
                code = await process.wait()
    out = "\n".join(lines)
    assert code == 0, out
    assert "\x1b" not in out  # not a terminal: plain lines
    # a line is printed only when it changed: never the same line twice
    assert len(lines) == len(set(lines)), out
    for name in ("first", "second", "third"):
        assert any(line.split()[:2] == [name, "completed"] for line in lines), out
    assert lines[0].startswith(f"{execution}  watched  running"), out
    assert f"{execution}  watched  completed  steps 3/3" in lines, out
    # the steps not begun were listed from the start
    assert any(line.split()[:2] == ["third", "pending"] for line in lines), out


async def test_watch_of_an_execution_that_fails_exits_1_showing_what_is_blocked(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(FAILS)
        execution = await engine.start("fails", {})
        run = await natsflow(engine, "watch", execution)
        again = await natsflow(engine, "watch", execution, "--json")
        shown = await natsflow(engine, "show", execution)
        missing = await natsflow(engine, "watch", "fails-nope")
    assert run.code == 1, run
    assert "error: step boom failed: always_fails: attempt 1" in run.out, run.out
    assert any(
        line.split()[:2] == ["household", "blocked"] and line.endswith("boom failed")
        for line in run.out.splitlines()
    ), run.out
    # watching a finished execution prints it once and exits as at its end
    assert again.code == 1, again
    (final,) = [msgspec.json.decode(line) for line in again.out.splitlines()]
    told = {key: (s["status"], s.get("reason")) for key, s in final["steps"].items()}
    assert told["household"] == ("blocked", "boom failed")
    assert told["person"] == ("blocked", "boom failed (via household)")
    assert told["first"] == ("completed", None)
    assert final["failed_step"] == "boom"
    assert "boom failed (via household)" in shown.out
    assert missing.code == 1, missing
    assert "not found" in missing.err


async def test_client_watch_yields_each_change_until_the_end(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    async with running(nats_server) as engine:
        await engine.deploy(WATCHED)
        execution = await engine.start("watched", {"gate": str(gate)})
        views: list[ExecutionView] = []
        with anyio.fail_after(30):
            async with aclosing(engine.client.watch(execution)) as watching:
                async for view in watching:
                    views.append(view)
                    if view.steps["first"].status == "running":
                        gate.touch()
    assert views[-1].status == "completed"
    assert all(view.status == "running" for view in views[:-1])
    assert all(list(view.steps) == ["first", "second", "third"] for view in views)
    seen = {(key, step.status) for view in views for key, step in view.steps.items()}
    assert ("third", "pending") in seen
    assert ("first", "running") in seen  # its worker reported progress
    assert all(a != b for a, b in pairwise(views))


async def test_show_blocks_the_fan_out_items_after_a_failed_one(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(FAN_OUT)
        execution = await engine.start("entities", {"entities": ENTITIES})
        shown = await engine.wait_done(execution)
    keys = list(shown["steps"])
    assert keys == ["sync", *(f"sync[{e['k']}]" for e in ENTITIES), "report"], keys
    told = {key: (s["status"], s.get("reason")) for key, s in shown["steps"].items()}
    assert told["sync[household]"][0] == "failed"
    assert told["sync[person]"] == ("blocked", "household failed")
    assert told["sync[address]"] == ("blocked", "household failed (via person)")
    assert told["sync[tags]"][0] == "completed"
    assert told["report"][0] == "completed"


async def test_watch_on_a_terminal_redraws_in_place(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read_all() -> None:
        # Until the watch exits and its side of the terminal closes (EIO on Linux).
        with suppress(OSError):
            while chunk := os.read(master, 4096):
                chunks.append(chunk)

    async with running(nats_server) as engine:
        await engine.deploy(WATCHED)
        execution = await engine.start("watched", {"gate": str(gate)})
        env = {**os.environ, "NATS_URL": engine.url, "NATSFLOW_LOG_LEVEL": "WARNING"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                # abandoned if the test times out: a hung watch never closes the terminal
                tg.start_soon(partial(anyio.to_thread.run_sync, read_all, abandon_on_cancel=True))
                command = [natsflow_script(), "watch", execution]
                async with await anyio.open_process(command, env=env, stdout=slave) as process:
                    os.close(slave)

                    async def first_frame() -> None:
                        assert b"first" in b"".join(chunks)

                    await eventually(first_frame, within=20)
                    gate.touch()
                    code = await process.wait()
    os.close(master)
    out = b"".join(chunks).decode()
    assert code == 0, out
    assert "\x1b[2K" in out  # each line erased as it is drawn
    assert "\x1b[4A" in out  # back over the headline and three steps: redrawn in place
    assert f"{execution}  watched  completed  steps 3/3" in out
