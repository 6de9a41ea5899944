"""Latency: executions run ONE AT A TIME, start request to terminal status seen.

    .venv/bin/python bench/latency.py [-n 300] [--n10 100] [--uvloop] [--profile DIR]

Topology as in bench/steps.py (nats-server, ``natsflow serve`` with actors only,
``natsflow worker``, this client). Method: one KV watcher over every key of
``natsflow_executions`` is opened once, before anything is started (a per-id
watch cannot be opened before the start call that makes the id). For each
execution: t0 = just before the ``natsflow.api.start`` request is sent;
t1 = when the watcher delivers the execution's first terminal summary to this
client. latency = t1 - t0; the next execution starts only after that.
Reported: p50/p90/p99/max of the latency, the start request's own round trip,
and for the multi-step variant the latency per step (execution latency / steps)
and the marginal cost of a step ((p50 N-step - p50 1-step) / (N - 1)).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/latency.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    PySpy,
    Stack,
    StackOptions,
    StatusWatcher,
    add_stack_arguments,
    chain_manifest,
    deploy,
    emit,
    env_record,
    pct,
    quiet_gate,
    rnd,
    run_main,
    stack_options,
    start,
    summarize_collapsed,
)

BENCH = "natsflow_latency"
METHOD = (
    "t0 before the start request; t1 when one KV watcher (natsflow_executions, key '>', "
    "opened once beforehand) delivers the execution's terminal summary; one execution at a time"
)


async def sequential(
    stack: Stack, watcher: StatusWatcher, workflow: str, n: int, within: float
) -> tuple[list[float], list[float]]:
    """(latencies, start round trips) in seconds for ``n`` executions one after another."""
    assert stack.nc is not None
    nc = stack.nc
    lat: list[float] = []
    rtt: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        execution = await start(nc, workflow, {"i": i})
        t_reply = time.perf_counter()
        try:
            done = await watcher.wait(execution, within)
        except TimeoutError:
            stack.check_alive()
            raise
        if done.status != "completed":
            raise RuntimeError(f"execution {execution} ended {done.status}")
        lat.append(done.seen - t0)
        rtt.append(t_reply - t0)
    return lat, rtt


def stats_ms(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {
        "p50_ms": rnd(1e3 * pct(s, 0.50)),
        "p90_ms": rnd(1e3 * pct(s, 0.90)),
        "p99_ms": rnd(1e3 * pct(s, 0.99)),
        "max_ms": rnd(1e3 * s[-1]) if s else float("nan"),
        "mean_ms": rnd(1e3 * statistics.fmean(s)) if s else float("nan"),
    }


async def measure(args: argparse.Namespace, options: StackOptions) -> list[dict[str, Any]]:
    variants = [(1, args.n)]
    if args.n10 and args.steps > 1:
        variants.append((args.steps, args.n10))
    records: list[dict[str, Any]] = []
    async with Stack(options) as stack:
        assert stack.nc is not None
        for steps, _ in variants:
            await deploy(stack.nc, chain_manifest(f"bench-chain{steps}", steps))
        watcher = await StatusWatcher.open(stack.nc)
        try:
            for steps, n in variants:
                workflow = f"bench-chain{steps}"
                await sequential(stack, watcher, workflow, args.warmup, args.timeout)
                waited = await quiet_gate(args.gate_wait)
                meter = stack.meter().start()
                lat, rtt = await sequential(stack, watcher, workflow, n, args.timeout)
                m = meter.stop()
                rec: dict[str, Any] = {
                    "bench": BENCH,
                    "variant": f"{steps}-step noop workflow, one execution at a time",
                    "steps": steps,
                    "n": n,
                    **stats_ms(lat),
                    "start_rtt_p50_ms": rnd(1e3 * pct(sorted(rtt), 0.5)),
                    "start_rtt_p99_ms": rnd(1e3 * pct(sorted(rtt), 0.99)),
                    "per_step_p50_ms": rnd(1e3 * pct(sorted(lat), 0.5) / steps),
                    "gate_wait_s": rnd(waited),
                    "method": METHOD,
                }
                for name in ("serve", "worker", "srv", "client"):
                    rec[f"{name}_cpu_us_per_execution"] = rnd(m[f"{name}_cpu_s"] * 1e6 / n)
                rec["other_cpu_pct"] = rnd(m["other_cpu_pct"])
                rec["wall_s"] = rnd(m["wall_s"])
                emit(rec)
                records.append(rec)
            if len(records) == 2:
                one, many = records
                steps = many["steps"]
                marginal = (many["p50_ms"] - one["p50_ms"]) / (steps - 1)
                emit(
                    {
                        "bench": BENCH,
                        "variant": "marginal step latency",
                        "per_step_marginal_p50_ms": rnd(marginal),
                        "formula": f"(p50 {steps}-step - p50 1-step) / {steps - 1}",
                    }
                )
            if args.profile:
                await profile_run(stack, watcher, args)
        finally:
            await watcher.close()
    return records


async def profile_run(stack: Stack, watcher: StatusWatcher, args: argparse.Namespace) -> None:
    out = Path(args.profile)
    pids = stack.pids()
    spies = {
        name: PySpy(pid, out / f"latency-{name}.collapsed.txt")
        for name in ("serve", "worker")
        if (pid := pids[name]) is not None
    }
    try:
        await asyncio.sleep(1.0)
        await sequential(stack, watcher, "bench-chain1", args.n, args.timeout)
    finally:
        for spy in spies.values():
            await spy.stop()
    for name, spy in spies.items():
        print(f"\n=== py-spy {name} (pid {pids[name]}): {spy.out}", file=sys.stderr)
        print(summarize_collapsed(spy.out), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="1-step executions measured")
    parser.add_argument("--steps", type=int, default=10, help="steps of the multi-step variant")
    parser.add_argument("--n10", type=int, default=100, help="multi-step executions (0: skip)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30, help="seconds per execution")
    parser.add_argument("--profile", metavar="DIR", help="py-spy serve and worker in an extra run")
    add_stack_arguments(parser)
    args = parser.parse_args()
    options = stack_options(args)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    emit({"bench": BENCH, "variant": "env", **env_record(options)})
    records = run_main(lambda: measure(args, options), options.uvloop)
    loop = "uvloop" if options.uvloop else "asyncio"
    print(f"\nnatsflow latency ({loop}); {METHOD}", flush=True)
    for r in records:
        print(
            f"  {r['steps']:>2}-step x {r['n']}: p50 {r['p50_ms']:.2f} ms  p90 {r['p90_ms']:.2f}"
            f"  p99 {r['p99_ms']:.2f}  max {r['max_ms']:.2f}  | per step {r['per_step_p50_ms']:.2f}"
            f" ms | start reply p50 {r['start_rtt_p50_ms']:.2f} ms"
            f" | CPU us/exec serve {r['serve_cpu_us_per_execution']:.0f}"
            f" worker {r['worker_cpu_us_per_execution']:.0f}"
            f" nats-server {r['srv_cpu_us_per_execution']:.0f}"
            f" | other CPU {r['other_cpu_pct']:.0f}%",
            flush=True,
        )
    if len(records) == 2:
        one, many = records
        marginal = (many["p50_ms"] - one["p50_ms"]) / (many["steps"] - 1)
        print(f"  marginal step latency (p50): {marginal:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
