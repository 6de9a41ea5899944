"""A worker slot goes on after a cancel notice stopped its attempt (real nats-server).

A slot's cancel scope serves its attempts until a cancel uses it; the slot then settles
that task and runs the next ones in a new scope. With one slot, every later step runs
in the slot that was cancelled.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from natsflow.actors.actions import ActionContext, ActionRegistry
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import PYTHON_MODULES, running
from tests.integration.test_deadlines_cancel import gone, shell_manifest

STUBBORN = """
name: stubborn
steps:
  hold: {action: python, with: {function: stubborn}}
"""

CHAIN = """
name: chain
steps:
  a: {action: noop}
  b: {action: noop, needs: [a]}
  c: {action: noop, needs: [b]}
"""


stubborn_runs: list[str] = []  # the executions whose stubborn step began


async def stubborn(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Swallows the cancel that stops it (as careless user code may), then returns."""
    stubborn_runs.append(ctx.execution_id)
    try:
        await anyio.sleep(60)
    except anyio.get_cancelled_exc_class():
        pass  # swallowed on purpose
    return {"swallowed": True}


def register(registry: ActionRegistry) -> None:
    """This module as a ``python_modules`` entry: the stubborn step's callable."""
    registry.register_python("stubborn", stubborn)


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


async def test_a_cancel_the_step_swallows_still_settles_it_and_the_slot_goes_on(
    nats_server: EmbeddedServer,
) -> None:
    modules = (*PYTHON_MODULES, __name__)
    async with running(nats_server, workers=1, python_modules=modules) as engine:
        await engine.deploy(STUBBORN)
        await engine.deploy(CHAIN)
        execution = await engine.start("stubborn")

        async def began() -> None:
            assert execution in stubborn_runs

        await eventually(began, within=15)
        await engine.cancel(execution, "operator")
        done = await engine.wait_done(execution)
        assert done["status"] == "cancelled"
        after = await engine.wait_done(await engine.start("chain"))
        assert after["status"] == "completed"
