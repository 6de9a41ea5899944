"""Trigger subjects: messages turned into executions per second, and publish-to-step latency.

    .venv/bin/python bench/triggers.py [-n 2000] [--reps 3] [--latency-n 300]
        [--publish js|core] [--fsync] [--uvloop] [--json] [--skip-raw | --raw-jsonl FILE]

Runs, one after the other (never at the same time), from the repository root:

1. the raw reference, ``../shared/bench/jetstream_ceiling.py --quick --suites S --only 1,2,4
   --reps 3`` (S: ``asyncio``, ``uvloop`` with ``--uvloop``, ``sync`` with ``--fsync``), as a
   child process: measurement 1 (an awaited ``js.publish``), 2 (``js.publish_async``,
   pipelined: the most a JetStream stream captures from one Python publisher) and 4 (a step
   round trip: C=100 for steps/s, C=1 for latency; the ``sync`` suite has only the bare
   round trip, in-process worker);
2. natsflow, on ``bench/common.py``'s ``Stack`` (nats-server, ``natsflow serve`` with the
   actors and triggers, ``natsflow worker``, each its own process; ``--fsync``:
   ``sync_interval: always`` and ``NATSFLOW_DURABILITY=fsync``), with one workflow of one
   noop step triggered by ``bench.orders.*``:

   - **throughput**: ``-n`` JSON trigger messages (~200 bytes) published as fast as
     possible (``--publish js``: ``js.publish_async``, acks awaited together at the end;
     ``core``: plain publishes and a flush), timed until every execution is *started*
     (its first summary in the KV bucket ``natsflow_executions``, seen by one watcher
     opened beforehand, as ``bench/latency.py`` does) and *completed* (its terminal
     summary). Rates are ``n / (last one seen - first publish)``; the count of executions
     is checked to be exactly ``n``.
   - **latency**, one message at a time: t0 just before an awaited ``js.publish`` of the
     trigger; ``ack`` when its PubAck is back; ``first step`` when the step's task message
     reaches a plain core subscription on ``natsflow.task.noop`` (an observer: the task is
     published to JetStream on that subject and a core subscriber sees the same message;
     nothing is consumed from the work-queue stream); ``completed`` when the watcher sees
     the execution's terminal summary. The next message goes only after that.

Prints one JSON line per measurement, then a table with the raw figures beside
natsflow's (``--json``: one JSON object instead of the table). The machine is shared:
only figures from the same run belong side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

if __package__ in (None, ""):  # run as a script: python bench/triggers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nats.aio.msg import Msg

from bench.common import (
    RAW_BENCH,
    REPO,
    Stack,
    StackOptions,
    StatusWatcher,
    add_stack_arguments,
    deploy,
    emit,
    env_record,
    med_min_max,
    pct,
    quiet_gate,
    rnd,
    run_main,
    stack_options,
)
from bench.compare import RAW_FULL, RAW_SIMPLE, run_child
from natsflow.actors.jetstream.topology import task_subject

BENCH = "natsflow_triggers"
WORKFLOW = "bench-trigger"
SUBJECTS = "bench.orders.*"
MANIFEST = orjson.dumps(
    {
        "name": WORKFLOW,
        "description": "benchmark: one noop step per trigger message",
        "triggers": [{"subject": SUBJECTS}],
        "steps": {"s0": {"action": "noop"}},
    }
).decode()
PAD = "x" * 160  # a ~200 byte payload, as the raw reference publishes


def payload(rep: int, i: int) -> bytes:
    return orjson.dumps({"order": i, "rep": rep, "note": PAD})


class Watcher(StatusWatcher):
    """``StatusWatcher`` that also notes when each execution's first summary was seen
    (its status is ``running`` by then: started)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.first_seen: dict[str, float] = {}

    def _record(self, key: str, value: bytes | None) -> None:
        if value and key not in self.first_seen:
            self.first_seen[key] = time.perf_counter()
        super()._record(key, value)


async def publish_all(stack: Stack, subject: str, rep: int, n: int, mode: str) -> None:
    """Publish ``n`` trigger messages as fast as this client can."""
    assert stack.nc is not None
    nc = stack.nc
    if mode == "core":
        for i in range(n):
            await nc.publish(subject, payload(rep, i))
        await nc.flush()
        return
    js = nc.jetstream(timeout=60, publish_async_max_pending=4000)
    futures = [await js.publish_async(subject, payload(rep, i)) for i in range(n)]
    await js.publish_async_completed()
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} trigger publishes failed, first: {errors[0]!r}")


async def wait_new(
    stack: Stack, watcher: Watcher, before: set[str], n: int, within: float
) -> tuple[list[str], list[str]]:
    """Wait until ``n`` executions not in ``before`` have finished; (started, finished)."""
    deadline = time.monotonic() + within
    last_check = time.monotonic()
    while True:
        finished = [k for k in watcher.finished if k not in before]
        if len(finished) >= n:
            started = [k for k in watcher.first_seen if k not in before]
            return started, finished
        if time.monotonic() > deadline:
            started = [k for k in watcher.first_seen if k not in before]
            raise TimeoutError(
                f"{len(started)} started, {len(finished)} of {n} finished after {within}s"
            )
        if time.monotonic() - last_check > 1:
            stack.check_alive()
            last_check = time.monotonic()
        await asyncio.sleep(0.01)  # the times come from the watcher, not from this poll


async def throughput_rep(
    stack: Stack, watcher: Watcher, rep: int, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    before = set(watcher.first_seen) | set(watcher.finished)
    subject = f"bench.orders.r{rep}"
    meter = stack.meter().start()
    t0 = time.perf_counter()
    await publish_all(stack, subject, rep, n, args.publish)
    t_published = time.perf_counter()
    started, finished = await wait_new(stack, watcher, before, n, args.timeout)
    t_done = max(watcher.finished[k].seen for k in finished)
    m = meter.stop(t_done)
    t_started = max(watcher.first_seen.get(k, t_done) for k in started)
    await asyncio.sleep(0.5)  # a duplicate would show up here
    extra = {k for k in watcher.first_seen if k not in before} - set(finished)
    failed = [k for k in finished if watcher.finished[k].status != "completed"]
    if extra or failed or len(finished) != n:
        raise RuntimeError(
            f"expected exactly {n} completed executions: {len(finished)} finished,"
            f" {len(failed)} not completed, {len(extra)} more started"
        )
    out: dict[str, Any] = {
        "published_per_s": n / (t_published - t0),
        "started_per_s": n / (t_started - t0),
        "completed_per_s": n / (t_done - t0),
        "wall_s": t_done - t0,
        "other_cpu_pct": m["other_cpu_pct"],
    }
    total = 0.0
    for name in ("serve", "worker", "srv", "client"):
        out[f"{name}_cpu_us_per_trigger"] = m[f"{name}_cpu_s"] * 1e6 / n
        total += m[f"{name}_cpu_s"]
    out["cpu_us_per_trigger"] = total * 1e6 / n
    return out


async def latency(stack: Stack, watcher: Watcher, n: int, within: float) -> dict[str, list[float]]:
    """``n`` triggers one at a time: seconds to the ack, the first task, completion."""
    assert stack.nc is not None
    nc = stack.nc
    js = nc.jetstream(timeout=within)
    tasks: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    async def on_task(msg: Msg) -> None:
        seen = time.perf_counter()
        tasks.put_nowait((orjson.loads(msg.data)["execution_id"], seen))

    sub = await nc.subscribe(task_subject("noop"), cb=on_task)  # observe, never consume
    await nc.flush()
    out: dict[str, list[float]] = {"ack": [], "first_step": [], "completed": []}
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await js.publish("bench.orders.latency", payload(-1, i))
            t_ack = time.perf_counter()
            try:
                execution, t_task = await asyncio.wait_for(tasks.get(), within)
                done = await watcher.wait(execution, within)
            except TimeoutError:
                stack.check_alive()
                raise
            if done.status != "completed":
                raise RuntimeError(f"execution {execution} ended {done.status}")
            out["ack"].append(t_ack - t0)
            out["first_step"].append(t_task - t0)
            out["completed"].append(done.seen - t0)
    finally:
        await sub.unsubscribe()
    return out


def ms_stats(prefix: str, values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        f"{prefix}_p50_ms": rnd(1e3 * pct(s, 0.50)),
        f"{prefix}_p90_ms": rnd(1e3 * pct(s, 0.90)),
        f"{prefix}_p99_ms": rnd(1e3 * pct(s, 0.99)),
        f"{prefix}_max_ms": rnd(1e3 * s[-1]) if s else float("nan"),
        f"{prefix}_mean_ms": rnd(1e3 * statistics.fmean(s)) if s else float("nan"),
    }


async def measure(args: argparse.Namespace, options: StackOptions) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    async with Stack(options) as stack:
        assert stack.nc is not None
        await deploy(stack.nc, MANIFEST)
        watcher = await Watcher.open(stack.nc)
        assert isinstance(watcher, Watcher)  # open() is typed as the base class's
        try:
            await throughput_rep(stack, watcher, -1, args.warmup, args)  # warm-up
            runs = []
            for rep in range(args.reps):
                waited = await quiet_gate(args.gate_wait)
                run = await throughput_rep(stack, watcher, rep, args.n, args)
                run["gate_wait_s"] = waited
                emit({"bench": BENCH, "variant": f"throughput rep {rep}", **run})
                runs.append(run)
            rec: dict[str, Any] = {
                "bench": BENCH,
                "variant": f"{args.n} triggers ({args.publish} publish) -> 1-step executions",
                "n": args.n,
                "reps": args.reps,
                "publish": args.publish,
                **med_min_max(runs),
            }
            emit(rec)
            records.append(rec)
            await latency(stack, watcher, args.warmup, args.timeout)  # warm-up
            await quiet_gate(args.gate_wait)
            meter = stack.meter().start()
            lat = await latency(stack, watcher, args.latency_n, args.timeout)
            m = meter.stop()
            rec = {
                "bench": BENCH,
                "variant": "trigger latency, one message at a time",
                "n": args.latency_n,
                **ms_stats("ack", lat["ack"]),
                **ms_stats("first_step", lat["first_step"]),
                **ms_stats("completed", lat["completed"]),
                "other_cpu_pct": rnd(m["other_cpu_pct"]),
            }
            emit(rec)
            records.append(rec)
        finally:
            await watcher.close()
    return records


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------


def _find(records: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in records if all(r.get(k) == v for k, v in match.items())), None)


def _med(record: dict[str, Any] | None, key: str, scale: float = 1.0) -> float | None:
    if record is None:
        return None
    value = record.get(key)
    if isinstance(value, dict):
        value = value.get("med")
    return float(value) * scale if isinstance(value, int | float) else None


def _fmt(x: float | None, digits: int) -> str:
    return "-" if x is None or x != x else f"{x:,.{digits}f}"


def _ratio(ours: float | None, raw: float | None) -> str:
    if ours is None or raw is None or raw == 0 or ours != ours or raw != raw:
        return "-"
    return f"{ours / raw:.2f}x"


def rows(raw: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(metric, raw, natsflow) rows; the raw step variants as in bench/compare.py."""
    step = "4_step_roundtrip"
    raw100 = _find(raw, bench=step, variant=RAW_FULL.format(c=100))
    raw1 = _find(raw, bench=step, variant=RAW_FULL.format(c=1))
    if raw100 is None and raw1 is None:  # the sync suite: bare round trip only
        raw100 = _find(raw, bench=step, variant=RAW_SIMPLE.format(c=100))
        raw1 = _find(raw, bench=step, variant=RAW_SIMPLE.format(c=1))
    pub = _find(raw, bench="2_pipelined_publish", variant="js.publish_async max_pending=4000")
    sync = _find(raw, bench="1_sync_publish")
    thr = next((r for r in ours if "triggers (" in str(r.get("variant"))), None)
    lat = _find(ours, variant="trigger latency, one message at a time")
    ms = 1e-3  # the raw reference reports microseconds
    table = [
        ("triggers published/s (raw: js.publish_async msgs/s)",
         _med(pub, "msgs_per_s"), _med(thr, "published_per_s"), 0),
        ("triggers -> started executions/s (raw: js.publish_async msgs/s)",
         _med(pub, "msgs_per_s"), _med(thr, "started_per_s"), 0),
        ("triggers -> completed 1-step executions/s (raw: step C=100 steps/s)",
         _med(raw100, "steps_per_s"), _med(thr, "completed_per_s"), 0),
        ("CPU us per trigger, all processes (raw: per step, py+srv+worker)",
         _med(raw100, "ours_cpu_us_per_op"), _med(thr, "cpu_us_per_trigger"), 0),
        ("publish ack p50 ms (raw: js.publish awaited)",
         _med(sync, "p50_us", ms), _med(lat, "ack_p50_ms"), 2),
        ("publish -> first step's task p50 ms (raw: step C=1 p50)",
         _med(raw1, "p50_us", ms), _med(lat, "first_step_p50_ms"), 2),
        ("publish -> first step's task p99 ms (raw: step C=1 p99)",
         _med(raw1, "p99_us", ms), _med(lat, "first_step_p99_ms"), 2),
        ("publish -> execution completed p50 ms (raw: step C=1 p50)",
         _med(raw1, "p50_us", ms), _med(lat, "completed_p50_ms"), 2),
        ("publish -> execution completed p99 ms (raw: step C=1 p99)",
         _med(raw1, "p99_us", ms), _med(lat, "completed_p99_ms"), 2),
    ]  # fmt: skip
    return [{"metric": m, "raw": r, "natsflow": n, "digits": d} for m, r, n, d in table]


def table(raw: list[dict[str, Any]], ours: list[dict[str, Any]]) -> str:
    out = ["| metric | raw nats-py | natsflow | natsflow / raw |", "|---|---:|---:|---:|"]
    for row in rows(raw, ours):
        r, n, d = row["raw"], row["natsflow"], row["digits"]
        out.append(f"| {row['metric']} | {_fmt(r, d)} | {_fmt(n, d)} | {_ratio(n, r)} |")
    thr = next((r for r in ours if "triggers (" in str(r.get("variant"))), None)
    if thr is not None:
        lo, hi = thr["completed_per_s"]["min"], thr["completed_per_s"]["max"]
        other = thr["other_cpu_pct"]["med"]
        out.append("")
        out.append(
            f"natsflow completed/s min-max over {thr['reps']} reps of {thr['n']}: "
            f"{lo:,.0f}-{hi:,.0f}; other CPU% on the machine (median): {other:.0f}"
        )
    return "\n".join(out)


def run_both(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The raw reference, then natsflow, each a child process; their JSON lines."""
    raw: list[dict[str, Any]] = []
    if args.raw_jsonl:
        text = Path(args.raw_jsonl).read_text()
        raw = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    elif not args.skip_raw:
        suite = "sync" if args.fsync else "uvloop" if args.uvloop else "asyncio"
        raw_path = Path("..") / RAW_BENCH.relative_to(REPO.parent)
        argv = [sys.executable, str(raw_path), "--quick", "--suites", suite]
        raw = run_child([*argv, "--only", "1,2,4", "--reps", str(args.reps)], "raw reference")
    # natsflow in a child of its own too: one after the other, each with a clean process.
    own = [a for a in sys.argv[1:] if a not in ("--json", "--skip-raw")]
    if args.raw_jsonl:
        own = [a for a in own if a not in ("--raw-jsonl", args.raw_jsonl)]
    try:
        ours = run_child(
            [sys.executable, "bench/triggers.py", "--natsflow-only", *own], "natsflow triggers"
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    return raw, [r for r in ours if r.get("bench") == BENCH]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="trigger messages per repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (raw and throughput)")
    parser.add_argument("--latency-n", type=int, default=300, help="triggers one at a time")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--publish", choices=("js", "core"), default="js")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per wait")
    parser.add_argument("--json", action="store_true", help="one JSON object, no table")
    parser.add_argument("--skip-raw", action="store_true", help="natsflow only")
    parser.add_argument("--raw-jsonl", help="take the raw figures from a saved run instead")
    parser.add_argument("--natsflow-only", action="store_true", help=argparse.SUPPRESS)
    add_stack_arguments(parser)
    args = parser.parse_args()
    options = stack_options(args)
    if args.natsflow_only:  # the child run by main() below
        emit({"bench": BENCH, "variant": "env", **env_record(options)})
        run_main(lambda: measure(args, options), options.uvloop)
        return
    # SIGTERM -> SystemExit, so that run_child's finally stops the running child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # --json: the children's output goes to stderr, stdout holds the one JSON object.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        raw, ours = run_both(args)
    loop = "uvloop" if args.uvloop else "asyncio"
    loop += ", fsync: sync_interval always" if args.fsync else ", lazy fsync (server default)"
    source = f"raw figures from {args.raw_jsonl}" if args.raw_jsonl else "same session"
    if args.json:
        summary = {
            "bench": BENCH,
            "loop": loop,
            "raw_source": source,
            "rows": [{k: v for k, v in r.items() if k != "digits"} for r in rows(raw, ours)],
            "natsflow": ours,
        }
        print(json.dumps(summary), flush=True)
        return
    print(f"\n## natsflow triggers vs raw nats-py + JetStream ({loop}, {source})\n", flush=True)
    print(table(raw, ours), flush=True)


if __name__ == "__main__":
    main()
