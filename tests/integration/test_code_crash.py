"""``kill -9`` of a ``natsflow worker --app`` process: code executions resume, and a
step whose completion was appended before the kill never runs again.

The app (``tests/integration/crash_app.py``) runs as a real subprocess against the
test's nats-server; the service (admin API, for start/show/history) runs in-process
and never holds a code execution. Each of the 20 steps appends ``start s<i>`` and
``done s<i>`` to the execution's own file. As in ``test_crash``: a step completed
before the kill ran exactly once; a step in flight at the kill may run twice.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from natsflow.actors.jetstream.store import EventStore
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.crash_app import STEPS
from tests.integration.harness import Engine, natsflow_script, running

ROOT = Path(__file__).resolve().parents[2]
KEYS = [f"mark#{i}" for i in range(STEPS)]


def starts(path: Path) -> Counter[str]:
    """How often each step started, by its key (``mark#<i>``)."""
    lines = [line.split() for line in path.read_text().splitlines()]
    return Counter(f"mark#{p[1][1:]}" for p in lines if p and p[0] == "start")


@asynccontextmanager
async def app_process(server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Process]:
    """``natsflow worker --app tests.integration.crash_app``, ready; stopped on exit."""
    log_path = tmp_path / "worker.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this tree's natsflow and the test app
        "NATS_URL": server.url,
        "NATSFLOW_TAKEOVER_AFTER": "2",  # ack wait: a killed process's messages come back
        "NATSFLOW_WORKERS": "8",
        "NATSFLOW_LOG_LEVEL": "INFO",
    }
    with log_path.open("ab") as log:
        process = await anyio.open_process(
            [natsflow_script(), "worker", "--app", "tests.integration.crash_app"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            async def ready() -> None:
                assert process.returncode is None, log_path.read_text()[-3000:]
                text = log_path.read_bytes()[offset:].decode(errors="replace")
                assert "natsflow worker ready" in text

            await eventually(ready, within=30, interval=0.05)
            yield process
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()


async def kill_9(process: Process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()


async def completed_steps(engine: Engine, execution: str) -> set[str]:
    """Steps whose completion is in the stream now (no app process is running)."""
    loaded = await EventStore(engine.nc, engine.nc.jetstream()).load(execution)
    return {key for key, step in loaded.state.steps.items() if step.status == "completed"}


async def completions(engine: Engine, execution: str) -> Counter[str]:
    history = await engine.history(execution)
    return Counter(e["step"] for e in history if e["type"] == "step_completed")


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill_9_of_the_app_process_at_random_moments(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    runs, parallel = 12, 3
    async with running(nats_server) as engine, contextlib.AsyncExitStack() as stack:
        process = await stack.enter_async_context(app_process(nats_server, tmp_path))
        for run in range(runs):
            paths = [tmp_path / f"effects-{run}-{i}.log" for i in range(parallel)]
            for path in paths:
                path.touch()
            executions = [await engine.start("crash_chain", {"path": str(path)}) for path in paths]
            delay = rng.uniform(0, 0.8)  # the executions take about 0.7 s
            await anyio.sleep(delay)  # chaos: kill at a random moment
            await kill_9(process)
            before = [await completed_steps(engine, e) for e in executions]
            starts_before = [starts(path) for path in paths]
            process = await stack.enter_async_context(app_process(nats_server, tmp_path))
            for execution, path, done_before, counted_before in zip(
                executions, paths, before, starts_before, strict=True
            ):
                shown = await engine.wait_done(execution, timeout=60)
                context = f"seed {seed}, run {run}, kill after {delay:.3f}s, {execution}"
                assert shown["status"] == "completed", (shown, context)
                assert shown["output"] == sum(range(STEPS)), context
                counted = starts(path)
                for key in done_before:
                    assert counted[key] == counted_before[key] == 1, (key, counted, context)
                for key in KEYS:
                    assert 1 <= counted[key] <= 2, (key, counted, context)

                async def once(execution: str = execution, context: str = context) -> None:
                    assert await completions(engine, execution) == dict.fromkeys(KEYS, 1), context

                await eventually(once, within=10)
