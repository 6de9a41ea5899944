"""Faults around a running service: takeover by another instance, drain on SIGTERM, presence.

The service runs as real ``natsflow serve`` subprocesses against the test's
nats-server; steps are shell commands whose side effects are files.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import anyio

from natsflow.actors.jetstream.presence import answer_presence, others_running, this_instance
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import connect, running
from tests.integration.test_crash import SideEffects, chain, kill_9, serve_process

# Runs a long time on its first attempt for an execution and ends at once on any later
# one: a step stopped by a drain finishes quickly when it runs again.
LONG_ONCE = (
    'mark="$0/$NATSFLOW_EXECUTION_ID"; if [ -e "$mark" ]; then exit 0; fi;'
    ' touch "$mark"; exec sleep 60'
)


def long_once_manifest() -> str:
    return (
        "name: long-once\n"
        "steps:\n"
        "  wait:\n"
        "    action: shell\n"
        "    with:\n"
        f"      argv: [sh, -c, '{LONG_ONCE}', '${{{{ input.dir }}}}']\n"
    )


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        return int(stat.read().rsplit(")", 1)[1].split()[1])


async def test_another_instance_takes_over_when_one_dies(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    effects = SideEffects(tmp_path / "effects.log")
    env = {"NATSFLOW_TAKEOVER_AFTER": "2"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        connect(nats_server.url) as engine,
        serve_process(nats_server, tmp_path / "a", env) as a,
        serve_process(nats_server, tmp_path / "b", env) as b,
    ):
        await engine.wait_ready()
        await engine.deploy(chain("chain", ["0", "5", "0"]))
        execution = await engine.start("chain", {"path": str(effects.path)})
        await effects.wait_started("s2", within=15)
        [step_pid] = effects.in_flight()
        running = {a.pid: a, b.pid: b}[parent_pid(step_pid)]
        await kill_9(running, effects)
        shown = await engine.wait_done(execution, timeout=30)
    logs = [(tmp_path / d / "serve.log").read_text()[-2000:] for d in ("a", "b")]
    assert shown["status"] == "completed", (shown, logs)
    starts = effects.starts()
    assert starts["s1"] == starts["s3"] == 1, (effects.lines(), logs)
    # killed mid-step, then run again by the other instance
    assert starts["s2"] == 2, (effects.lines(), logs)


async def test_sigterm_drains_hands_back_and_exits_0(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    """SIGTERM during 50 running steps: /readyz 503, the steps are stopped after the grace
    period and handed back, exit 0; another instance (started while the first drains, so
    it does not release anything itself) runs them at once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    http_port = free_port()
    # far beyond the test's deadline: only a hand-back lets the steps run again in time
    never = {"NATSFLOW_TAKEOVER_AFTER": "600"}
    first_env = {
        **never,
        "NATSFLOW_WORKERS": "50",
        "NATSFLOW_DRAIN_GRACE": "5",
        "NATSFLOW_HTTP_PORT": str(http_port),
    }
    async with (
        connect(nats_server.url) as engine,
        serve_process(nats_server, tmp_path / "a", first_env) as first,
    ):
        await engine.wait_ready()
        await engine.deploy(long_once_manifest())
        executions = [await engine.start("long-once", {"dir": str(marks)}) for _ in range(50)]

        async def all_running() -> None:
            assert len(list(marks.iterdir())) == 50

        await eventually(all_running, within=30)
        first.send_signal(signal.SIGTERM)

        async def not_ready() -> None:
            url = f"http://127.0.0.1:{http_port}/readyz"
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                assert reply.status == 503

        await eventually(not_ready, within=3, interval=0.05)
        async with serve_process(nats_server, tmp_path / "b", never):
            with anyio.fail_after(5 + 15):  # the grace period, then stopping and flushing
                code = await first.wait()
            assert code == 0
            first_log = (tmp_path / "a" / "serve.log").read_text()
            assert "stopping 50 step(s) still running" in first_log, first_log[-3000:]
            # Every step's shell got SIGTERM and is gone: no orphans keep running.
            assert _sleepers(nats_server.url) == []
            for execution in executions:
                shown = await engine.wait_done(execution, timeout=30)
                assert shown["status"] == "completed", shown
        second_log = (tmp_path / "b" / "serve.log").read_text()
        assert "released" not in second_log, second_log[-3000:]


def _sleepers(nats_url: str) -> list[int]:
    """Processes still running ``sleep 60`` for a service of this test's nats-server."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if argv[:2] == [b"sleep", b"60"] and f"NATS_URL={nats_url}".encode() in environ:
            found.append(int(entry.name))
    return found


async def test_presence_lists_the_other_instances(nats_server: EmbeddedServer) -> None:
    async with connect(nats_server.url) as engine:
        nc = engine.nc
        me, other = this_instance(("actors",)), this_instance(("workers",))
        assert await others_running(nc, me) == []
        mine = await answer_presence(nc, me)
        theirs = await answer_presence(nc, other)
        try:
            assert await others_running(nc, me) == [other]
        finally:
            await mine.unsubscribe()
            await theirs.unsubscribe()
    assert os.getpid() == me.pid


async def test_tasks_waiting_for_a_busy_pool_are_not_run_twice(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    """More long steps than slots, with a takeover wait shorter than a step: tasks the
    pool has taken but not started are kept alive, and the ones it has no room for stay
    in the stream, so none is delivered twice."""
    effects = SideEffects(tmp_path / "effects.log")
    async with running(nats_server, workers=2, takeover_after=1.0) as engine:
        await engine.deploy(chain("slow", ["2.5"]))
        executions = [await engine.start("slow", {"path": str(effects.path)}) for _ in range(6)]
        for execution in executions:
            shown = await engine.wait_done(execution, timeout=40)
            assert shown["status"] == "completed", shown
    started = [line for line in effects.lines() if line[0] == "start"]
    assert len(started) == 6, started
