"""Long-running loop: stream bytes and service memory while one execution pages on.

Runs ``natsflow serve`` (actors and workers, snapshots every 100 events) as a
subprocess against its own nats-server, starts one ``paginate``-style loop
(the example's shape with no pause between pages), and samples as it goes:
events in the history, the NATSFLOW_EVENTS stream's bytes, and the serve
process's resident memory. Stops after ``--events`` events.

    .venv/bin/python bench/loop.py --events 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

import natsflow
from natsflow.actors.jetstream.topology import EVENTS_STREAM
from natsflow.service.embedded import scratch_server

MANIFEST = """
name: loop-bench
steps:
  page:
    action: python
    with:
      function: fetch_page
      args: {page: "${{ loop.iteration }}", pages: "${{ input.pages }}"}
    repeat:
      until: "${{ not output.has_more }}"
      max_iterations: 10000000
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextmanager
def serve_process(url: str, tmp: str, snapshot_every: int) -> Iterator[int]:
    """``natsflow serve`` as a subprocess; yields its pid, stops it on the way out."""
    natsflow = shutil.which("natsflow", path=os.path.dirname(sys.executable))
    assert natsflow, "natsflow is not installed in this venv (make test installs it)"
    env = {
        **os.environ,
        "NATS_URL": url,
        "NATSFLOW_HTTP_PORT": "0",
        "NATSFLOW_WORKERS": "4",
        "NATSFLOW_SNAPSHOT_EVERY": str(snapshot_every),
        "NATSFLOW_LOG_LEVEL": "WARNING",
    }
    with open(Path(tmp) / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [natsflow, "serve", "--python-module", "natsflow.actors.examples"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="natsflow-loop-") as tmp:
        server = scratch_server(tmp)
        async with server:
            with serve_process(server.url, tmp, args.snapshot_every) as pid:
                await sample(server.url, pid, args)


async def sample(url: str, pid: int, args: argparse.Namespace) -> None:
    async with await natsflow.Client.connect(url) as client:
        with anyio.fail_after(20):
            while True:
                try:
                    await natsflow.Client(client.nc, request_timeout=1).workflows()
                    break
                except natsflow.Unavailable:
                    await anyio.sleep(0.2)
        await client.deploy(MANIFEST, "yaml", "bench")
        pages = args.events // 2 + 10
        execution = (await client.start("loop-bench", {"pages": pages})).execution_id
        js = client.nc.jetstream()
        t0 = time.perf_counter()
        next_report = args.every
        rows = []
        while True:
            await anyio.sleep(1)
            show = await client.show(execution)
            events = show.resume_point.events
            if events >= next_report or events >= args.events:
                info = await js.stream_info(EVENTS_STREAM)
                row = {
                    "events": events,
                    "iteration": show.steps["page"].iteration,
                    "events_stream_bytes": info.state.bytes,
                    "events_stream_msgs": info.state.messages,
                    "serve_rss_kib": rss_kib(pid),
                    "elapsed_s": round(time.perf_counter() - t0, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                next_report += args.every
            if events >= args.events:
                break
        if show.status == "running":
            await client.cancel(execution, "bench done")
        first, last = rows[0], rows[-1]
        print(
            f"\nafter {last['events']} events: NATSFLOW_EVENTS holds {last['events_stream_bytes']} bytes"
            f" in {last['events_stream_msgs']} messages (limit 65536);"
            f" serve RSS {first['serve_rss_kib']} KiB at {first['events']} events,"
            f" {last['serve_rss_kib']} KiB at {last['events']}"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000, help="report every N events")
    parser.add_argument("--snapshot-every", type=int, default=100)
    anyio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
