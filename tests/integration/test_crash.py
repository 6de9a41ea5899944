"""``kill -9`` of a ``natsflow serve`` process: executions resume, finished steps never rerun.

The service runs as a real subprocess against the test's nats-server. Each step
is a shell command that appends ``start <step> <idempotency key> <pid>`` and,
when it ends, ``done <step> <key>`` to a file: the file is the side effect whose
count is checked. A step whose ``StepCompleted`` was appended before the kill
must have run exactly once; a step in flight at the kill may run twice.
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
from tests.integration.harness import Engine, connect, natsflow_script

SCRIPT = (
    'echo "start $NATSFLOW_STEP $NATSFLOW_IDEMPOTENCY_KEY $$" >> "$0"; sleep "$1";'
    ' echo "done $NATSFLOW_STEP $NATSFLOW_IDEMPOTENCY_KEY" >> "$0"'
)


def chain(name: str, sleeps: list[str]) -> str:
    """A manifest: steps s1..sN in a chain, each running SCRIPT with its sleep."""
    lines = [f"name: {name}", "steps:"]
    for index, seconds in enumerate(sleeps, start=1):
        lines += [
            f"  s{index}:",
            "    action: shell",
            *([f"    needs: [s{index - 1}]"] if index > 1 else []),
            "    with:",
            f"      argv: [sh, -c, '{SCRIPT}', '${{{{ input.path }}}}', '{seconds}']",
        ]
    return "\n".join(lines) + "\n"


class SideEffects:
    """The lines the steps appended to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines()]

    def starts(self) -> Counter[str]:
        return Counter(parts[1] for parts in self.lines() if parts[0] == "start")

    def keys(self, step: str) -> set[str]:
        return {p[2] for p in self.lines() if p[0] == "start" and p[1] == step}

    def in_flight(self) -> list[int]:
        """Pids of the commands that started and did not finish (their process groups)."""
        lines = self.lines()
        done = {p[2] for p in lines if p[0] == "done"}
        return [int(p[3]) for p in lines if p[0] == "start" and p[2] not in done]

    async def wait_started(self, step: str, within: float) -> None:
        async def started() -> None:
            assert step in self.starts(), f"{step} not started: {self.lines()}"

        await eventually(started, within=within, interval=0.02)


def service_env(
    server: EmbeddedServer, data_dir: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        **os.environ,
        "NATS_URL": server.url,
        "NATSFLOW_HTTP_PORT": "0",
        "NATSFLOW_TAKEOVER_AFTER": "2",
        "NATSFLOW_WORKERS": "4",
        "NATSFLOW_DATA_DIR": str(data_dir),
        "NATSFLOW_LOG_LEVEL": "INFO",
        **(extra or {}),
    }


@asynccontextmanager
async def serve_process(
    server: EmbeddedServer, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Process]:
    """``natsflow serve`` as a subprocess (log appended to ``serve.log``); stopped on exit."""
    with (tmp_path / "serve.log").open("ab") as log:
        process = await anyio.open_process(
            [natsflow_script(), "serve"],
            env=service_env(server, tmp_path / "data", extra_env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                    with anyio.move_on_after(10):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.aclose()


async def kill_9(process: Process, effects: SideEffects) -> None:
    """SIGKILL the service, then the step commands it left running (orphans otherwise)."""
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    for pid in effects.in_flight():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


async def completed_steps(engine: Engine, execution: str) -> set[str]:
    """Steps whose completion is in the stream now (read directly: no service is running)."""
    loaded = await EventStore(engine.nc, engine.nc.jetstream()).load(execution)
    return {key for key, step in loaded.state.steps.items() if step.status == "completed"}


async def completions(engine: Engine, execution: str, archive: bool = False) -> Counter[str]:
    """How often each step completed; from the archive when snapshots compact the stream
    (it is filled asynchronously: wait, with a deadline, until it has the end)."""

    async def counted() -> Counter[str]:
        history = await engine.call("history", {"execution_id": execution, "all": archive})
        events = history["events"]
        if archive:
            assert any(e["type"] == "execution_completed" for e in events), "archive behind"
        return Counter(e["step"] for e in events if e["type"] == "step_completed")

    return await eventually(counted, within=20, interval=0.1)


async def test_kill_9_mid_step_resumes_without_rerunning_finished_steps(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    effects = SideEffects(tmp_path / "effects.log")
    steps = ["s1", "s2", "s3", "s4", "s5"]
    # A takeover wait far beyond the test's deadline: the restarted service must find no
    # other instance and hand back what the killed one held at once.
    never = {"NATSFLOW_TAKEOVER_AFTER": "600"}
    async with connect(nats_server.url) as engine:
        async with serve_process(nats_server, tmp_path, never) as first:
            await engine.wait_ready()
            await engine.deploy(chain("chain", ["0", "0", "3", "0", "0"]))
            execution = await engine.start("chain", {"path": str(effects.path)})
            await effects.wait_started("s3", within=15)
            await kill_9(first, effects)
        before = await completed_steps(engine, execution)
        async with serve_process(nats_server, tmp_path, never):
            shown = await engine.wait_done(execution, timeout=20)
            completed = await completions(engine, execution)

    log = (tmp_path / "serve.log").read_text()
    assert shown["status"] == "completed", (shown, log[-3000:])
    assert before == {"s1", "s2"}
    starts = effects.starts()
    assert starts["s1"] == starts["s2"] == 1
    assert 1 <= starts["s3"] <= 2
    assert starts["s4"] == starts["s5"] == 1
    # The rerun of s3 is the same attempt (a redelivered task), with the same key.
    assert effects.keys("s3") == {f"{execution}:s3:1"}
    assert completed == dict.fromkeys(steps, 1)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("snapshot_every", [100, 2], ids=["default", "snapshot-every-2"])
async def test_kill_9_at_random_moments(
    nats_server: EmbeddedServer, tmp_path: Path, snapshot_every: int
) -> None:
    """Kill at random moments; with snapshots every 2 events, the kills land between
    appends, snapshots and purges too (the archive keeps the full trail to check)."""
    env = {"NATSFLOW_SNAPSHOT_EVERY": str(snapshot_every), "NATSFLOW_ARCHIVE": "1"}
    archive = True
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    steps = [f"s{i}" for i in range(1, 7)]
    async with connect(nats_server.url) as engine, contextlib.AsyncExitStack() as stack:
        process = await stack.enter_async_context(serve_process(nats_server, tmp_path, env))
        await engine.wait_ready()
        await engine.deploy(chain("quick", ["0.1"] * len(steps)))
        for run in range(20):
            effects = SideEffects(tmp_path / f"effects-{run}.log")
            execution = await engine.start("quick", {"path": str(effects.path)})
            delay = rng.uniform(0, 0.8)  # the workflow takes about 0.7 s
            await anyio.sleep(delay)  # chaos: kill at a random moment of the execution
            await kill_9(process, effects)
            before = await completed_steps(engine, execution)
            starts_before = effects.starts()
            process = await stack.enter_async_context(serve_process(nats_server, tmp_path, env))
            shown = await engine.wait_done(execution, timeout=30)
            starts = effects.starts()
            completed = await completions(engine, execution, archive)
            context = f"seed {seed}, run {run}, kill after {delay:.3f}s, completed {before}"
            assert shown["status"] == "completed", context
            for step in before:
                assert starts[step] == starts_before[step] == 1, (step, starts, context)
            for step in steps:
                assert 1 <= starts[step] <= 2, (step, starts, context)
            assert completed == dict.fromkeys(steps, 1), context
