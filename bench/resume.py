"""Resume benchmark: how long activating an execution takes as its history grows.

For executions of 100, 1,000, 10,000 and 100,000 events it writes a history
the way the execution actor does (one compare-and-set append per decision of
two events: an iteration's completion and the next iteration's dispatch, as a
``repeat`` loop produces), once with snapshots every ``--snapshot-every``
events (snapshot + purge, as the actor does) and once without, then times
``EventStore.load`` (what an actor does on activation) ``--reps`` times. With
snapshots the last interval is left unsnapshotted, so activation reads the
snapshot plus a tail of almost ``--snapshot-every`` events: the worst case.

    .venv/bin/python bench/resume.py            # the table
    .venv/bin/python bench/resume.py --sizes 100,1000 --reps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import anyio
import nats
from msgspec.structs import replace
from nats.aio.client import Client

from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import EVENTS_STREAM, provision
from natsflow.events.fold import fold
from natsflow.events.model import (
    INITIAL,
    AnyEvent,
    ExecutionStarted,
    ExecutionState,
    StepCompleted,
    StepScheduled,
)
from natsflow.service.embedded import scratch_server


def decision(iteration: int, now: float) -> tuple[AnyEvent, ...]:
    return (
        StepCompleted(
            at=now,
            step="page",
            attempt=1,
            iteration=iteration,
            output={"page": iteration},
            final=False,
        ),
        StepScheduled(
            at=now,
            step="page",
            attempt=1,
            iteration=iteration + 1,
            action="python",
            input={"function": "fetch_page", "args": {"page": iteration + 1}},
        ),
    )


async def write_history(store: EventStore, execution: str, events: int, snapshot_every: int) -> int:
    """Append ``events`` events in two-event decisions; returns the number of snapshots written."""
    now = time.time()
    first: tuple[AnyEvent, ...] = (
        ExecutionStarted(at=now, execution_id=execution, workflow="paginate", version="bench"),
        StepScheduled(at=now, step="page", attempt=1, action="python", input={"args": {"page": 0}}),
    )
    state: ExecutionState = fold(first, replace(INITIAL, execution_id=execution))
    seq = await store.append(execution, first, 0)
    written, since, snap_seq, snapshots = 2, 2, 0, 0
    iteration = 0
    while written < events:
        batch = decision(iteration, now)
        seq = await store.append(execution, batch, seq)
        state = fold(batch, state)
        written, since, iteration = written + 2, since + 2, iteration + 1
        # The worst case for activation: a tail of almost a full interval after the last
        # snapshot (no snapshot in the last interval).
        if snapshot_every and since >= snapshot_every and written <= events - snapshot_every:
            snap_seq = await store.write_snapshot(execution, state, seq, snap_seq)
            since, snapshots = 0, snapshots + 1
    return snapshots


async def stream_bytes(nc: Client) -> int:
    """Bytes in the events stream (executions are written one after another, so a delta
    is one execution's footprint: snapshot, the event it covers, and the tail)."""
    info = await nc.jetstream().stream_info(EVENTS_STREAM)
    return int(info.state.bytes)


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="natsflow-resume-") as tmp:
        server = scratch_server(tmp)
        async with server:
            nc = await nats.connect(server.url)
            js = nc.jetstream(timeout=30)
            await provision(js, ack_wait=30)
            store = EventStore(nc, js)
            rows = []
            for size in sizes:
                for snapshots_on in (True, False):
                    execution = f"resume-{size}-{'snap' if snapshots_on else 'full'}"
                    every = args.snapshot_every if snapshots_on else 0
                    before = await stream_bytes(nc)
                    t0 = time.perf_counter()
                    await write_history(store, execution, size, every)
                    build = time.perf_counter() - t0
                    reps = args.reps if size <= 10_000 else max(3, args.reps // 10)
                    times = []
                    for _ in range(reps):
                        t1 = time.perf_counter()
                        loaded = await store.load(execution, use_snapshot=snapshots_on)
                        times.append(time.perf_counter() - t1)
                    assert loaded.state.events >= size, (loaded.state.events, size)
                    row = {
                        "events": size,
                        "snapshots": snapshots_on,
                        "activation_p50_ms": round(1000 * statistics.median(times), 3),
                        "activation_min_ms": round(1000 * min(times), 3),
                        "events_read": loaded.events_read,
                        "reps": reps,
                        "stream_bytes": await stream_bytes(nc) - before,
                        "build_s": round(build, 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            await nc.close()
    print()
    print(
        f"{'events':>8} | {'snapshots on: p50 ms':>21} | {'off: p50 ms':>12} | {'on: bytes':>10} | {'off: bytes':>11}"
    )
    print("-" * 76)
    for size in sizes:
        on = next(r for r in rows if r["events"] == size and r["snapshots"])
        off = next(r for r in rows if r["events"] == size and not r["snapshots"])
        print(
            f"{size:>8} | {on['activation_p50_ms']:>21} | {off['activation_p50_ms']:>12} |"
            f" {on['stream_bytes']:>10} | {off['stream_bytes']:>11}"
        )
    first_on = next(r for r in rows if r["snapshots"])
    last_on = [r for r in rows if r["snapshots"]][-1]
    ratio = last_on["activation_p50_ms"] / first_on["activation_p50_ms"]
    print(f"\nwith snapshots, {last_on['events']} vs {first_on['events']} events: {ratio:.2f}x")


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--snapshot-every", type=int, default=100)
    anyio.run(main, parser.parse_args())


if __name__ == "__main__":
    cli()
