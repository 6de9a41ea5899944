"""A worker slot goes on after a cancel notice stopped its attempt (real nats-server).

A slot's cancel scope serves its attempts until a cancel uses it; the slot then settles
that task and runs the next ones in a new scope. With one slot, every later step runs
in the slot that was cancelled.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import anyio

from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import running
from tests.integration.test_deadlines_cancel import gone, shell_manifest

CHAIN = """
name: chain
steps:
  a: {action: noop}
  b: {action: noop, needs: [a]}
  c: {action: noop, needs: [b]}
"""


async def pid_in(path: Path) -> int:
    """The pid the shell step's script wrote."""
    return int((await anyio.Path(path).read_text()).strip())


async def test_the_one_slot_runs_steps_after_each_cancel_it_served(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    async with running(nats_server, workers=1, cancel_grace=1.0) as engine:
        await engine.deploy(CHAIN)
        for round_ in range(2):
            pidfile = tmp_path / f"pid{round_}"
            await engine.deploy(shell_manifest(pidfile, ignore_term=False))
            execution = await engine.start("long")

            pid = await eventually(
                partial(pid_in, pidfile), within=15, ignoring=(FileNotFoundError, ValueError)
            )
            os.kill(pid, 0)  # running in the only slot
            await engine.cancel(execution, "operator")
            await eventually(partial(gone, pid), within=5)
            done = await engine.wait_done(execution)
            assert done["status"] == "cancelled"
            assert done["steps"]["work"]["attempts"][-1]["kind"] == "cancelled"
            after = await engine.wait_done(await engine.start("chain"))
            assert after["status"] == "completed"
            assert [after["steps"][s]["status"] for s in "abc"] == ["completed"] * 3
