"""How long work stops when nats-server is killed (-9) and restarted at once, under load.

Runs natsflow in-process against its own nats-server, starts ``--executions``
chains of ``--steps`` noop steps, kills the server after ``--kill-after`` seconds and
starts it again on the same port and store. A separate watcher (reconnecting every
0.2 s) reads the last event sequence of each execution every ~0.1 s; the figure is
the longest time any execution went without a new event across the restart.

    .venv/bin/python bench/nats_restart.py [--fsync] [--executions 20] [--steps 1500]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

import anyio
import nats

from natsflow.actors.jetstream.topology import EVENTS_STREAM, events_subject
from natsflow.service.app import serve
from natsflow.service.client import Client
from natsflow.service.config import Config
from natsflow.service.embedded import EmbeddedServer, free_port


def chain(steps: int) -> str:
    lines = ["name: long", "steps:"]
    for index in range(steps):
        needs = f", needs: [s{index - 1}]" if index else ""
        lines.append(f"  s{index}: {{action: noop{needs}}}")
    return "\n".join(lines) + "\n"


def longest_stall(points: list[tuple[float, int]], since: float) -> float:
    """The longest gap between two readings that saw progress, ending after ``since``."""
    stall, last_time, last_seq = 0.0, None, None
    for at, seq in points:
        if last_seq is None or seq > last_seq:
            if last_time is not None and at > since:
                stall = max(stall, at - last_time)
            last_time, last_seq = at, seq
    return stall


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="natsflow-restart-"))
    conf = tmp / "nats.conf"
    conf.write_text("jetstream { sync_interval: always }\n" if args.fsync else "")
    server = EmbeddedServer(
        config_file=str(conf),
        port=free_port(),
        store_dir=str(tmp / "jetstream"),
        log_file=str(tmp / "nats-server.log"),
    )
    await server.start()
    config = Config(nats_url=server.url, http_port=0, workers=8, durability="relaxed")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(serve, config)
            client = await Client.connect(server.url)
            async with client:
                await client.deploy(chain(args.steps), "yaml")
                ids = [
                    (await client.start("long", {})).execution_id for _ in range(args.executions)
                ]
            watcher = await nats.connect(
                server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2
            )
            js = watcher.jetstream(timeout=1)
            progress: dict[str, list[tuple[float, int]]] = {i: [] for i in ids}
            started = time.monotonic()
            killed_at = 0.0
            while time.monotonic() - started < args.kill_after + args.watch:
                for execution in ids:
                    try:
                        last = await js.get_msg(EVENTS_STREAM, subject=events_subject(execution))
                    except Exception:  # the server is away: no reading this time
                        continue
                    progress[execution].append((time.monotonic() - started, last.seq or 0))
                if not killed_at and time.monotonic() - started > args.kill_after:
                    assert server.pid is not None
                    os.kill(server.pid, signal.SIGKILL)
                    await server.wait_exited()
                    await server.stop()
                    await server.start()
                    killed_at = time.monotonic() - started
                await anyio.sleep(0.1)
            await watcher.close()
            worst = max(longest_stall(points, killed_at) for points in progress.values())
            print(
                f"{args.executions} executions x {args.steps} noop steps, "
                f"fsync={'always' if args.fsync else 'lazy'}: nats-server killed (-9) and "
                f"restarted at {killed_at:.2f} s; longest stall of any execution across it: "
                f"{worst:.2f} s"
            )
            tg.cancel_scope.cancel()
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument("--watch", type=float, default=8.0, help="seconds to watch after")
    parser.add_argument("--fsync", action="store_true")
    anyio.run(main, parser.parse_args())
