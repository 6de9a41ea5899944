"""Crash recovery: ``kill -9`` of ``natsflow serve`` in the middle of an execution.

    .venv/bin/python bench/crash.py [--runs 3 | --quick] [--seed 7] [--takeover-after S]
                                    [--fsync] [--modes baseline,restart,takeover] [--json]

The workflow is a chain of 50 ``shell`` steps (``--steps``), each sleeping 20 ms
(``--sleep``) and appending ``start <step> <idempotency key> <pid> <ppid>`` and, when
it ends, ``done <step> <key>`` to a side-effect file. A shell step's parent is the
``natsflow serve`` process whose worker ran it, so ``<ppid>`` names the instance.
This script starts its own nats-server (``--fsync``: ``sync_interval: always``) and
runs ``natsflow serve`` (actors and workers in one process, HTTP off) as real
subprocesses, fresh ones for every run. Modes, each ``--runs`` times:

- ``baseline``: no kill; start request to terminal status, as the client sees it
  (one KV watcher over ``natsflow_executions``).
- ``restart``: when step ``s<k>`` starts (k uniform in 10..40, seeded), ``kill -9`` the
  serve process and the step command it left running, and start a new serve at once;
  crash-to-done is from the kill to the terminal status.
- ``takeover``: two serve processes from the start; ``kill -9`` the one running step
  ``s<k>`` (its ``<ppid>``), no restart: the other one has to finish the execution.

Re-runs come from the side-effect file (a step's starts minus one), split into steps
completed before the kill (``StepCompleted`` in the stream, read right after the kill:
must be 0) and the others, i.e. the step in flight (at most once more each).

``--takeover-after S`` sets ``NATSFLOW_TAKEOVER_AFTER`` (the consumers' ack wait: how
long a surviving instance waits before it takes over) for the serve processes; without
it they run with the default. Everything started here is stopped on exit, Ctrl-C or
SIGTERM (bench/common.py's ``Child`` and ``run_main``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/crash.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio
import nats
from nats.aio.client import Client as Nats

import natsflow
from bench.common import (
    Child,
    StatusWatcher,
    bench_server,
    natsflow_argv,
    quiet_gate,
    rnd,
    run_main,
)
from natsflow.actors.jetstream.store import EventStore

BENCH = "natsflow_crash"
WORKFLOW = "crash"
MODES = ("baseline", "restart", "takeover")
KILL_RANGE = (10, 40)
"""The step at whose start the kill comes, uniform in this range (inclusive)."""

SCRIPT = (
    'echo "start $NATSFLOW_STEP $NATSFLOW_IDEMPOTENCY_KEY $$ $PPID" >> "$0"; sleep "$1";'
    ' echo "done $NATSFLOW_STEP $NATSFLOW_IDEMPOTENCY_KEY" >> "$0"'
)


def chain(name: str, steps: int, sleep: float) -> str:
    """A manifest: steps s1..sN in a chain, each running SCRIPT (as tests/integration/
    test_crash.py does, plus the parent's pid)."""
    lines = [f"name: {name}", "steps:"]
    for index in range(1, steps + 1):
        lines += [
            f"  s{index}:",
            "    action: shell",
            *([f"    needs: [s{index - 1}]"] if index > 1 else []),
            "    with:",
            f"      argv: [sh, -c, '{SCRIPT}', '${{{{ input.path }}}}', '{sleep}']",
        ]
    return "\n".join(lines) + "\n"


class SideEffects:
    """The lines the steps appended to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines() if line.strip()]

    @staticmethod
    def starts(lines: list[list[str]]) -> Counter[str]:
        return Counter(parts[1] for parts in lines if parts[0] == "start")

    @staticmethod
    def in_flight(lines: list[list[str]]) -> list[list[str]]:
        """The start lines of commands that did not finish."""
        done = {parts[2] for parts in lines if parts[0] == "done"}
        return [p for p in lines if p[0] == "start" and p[2] not in done]

    async def wait_started(self, step: str, within: float, alive: Child) -> list[str]:
        """Poll (every 2 ms: the step lasts 20) until ``step`` started; its start line."""
        deadline = time.monotonic() + within
        while True:
            for parts in self.lines():
                if parts[0] == "start" and parts[1] == step:
                    return parts
            alive.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{step} not started after {within}s: {self.path}")
            await anyio.sleep(0.002)


@dataclass
class Settings:
    steps: int
    sleep: float
    runs: int
    seed: int
    fsync: bool
    uvloop: bool
    workers: int
    takeover_after: float | None
    timeout: float
    gate_wait: float
    keep: bool


class Bench:
    """One nats-server for the whole benchmark; fresh serve processes for every run."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.dir = directory
        self.server = bench_server(directory, fsync=settings.fsync)
        self.nc: Nats | None = None
        self.watcher: StatusWatcher | None = None
        self.children: list[Child] = []
        self._spawned = 0

    def env(self) -> dict[str, str]:
        self._spawned += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("NATSFLOW_")}
        env.update(
            {
                "NATS_URL": self.server.url,
                "NATSFLOW_WORKERS": str(self.settings.workers),
                "NATSFLOW_HTTP_PORT": "0",
                "NATSFLOW_DATA_DIR": str(self.dir / f"data-{self._spawned}"),
                "NATSFLOW_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.settings.takeover_after is not None:
            seconds = f"{self.settings.takeover_after:g}"
            env["NATSFLOW_TAKEOVER_AFTER"] = seconds
        return env

    def spawn(self) -> Child:
        """``natsflow serve`` (actors + workers), not waited for."""
        number = self._spawned + 1
        child = Child(
            f"natsflow serve #{number}",
            natsflow_argv("serve", uvloop=self.settings.uvloop),
            self.env(),
            self.dir / f"serve-{number}.log",
        )
        self.children.append(child)
        return child

    async def wait_ready(self, child: Child, within: float = 60) -> None:
        """Until its log says ready (admin API, pullers and workers are up then)."""
        deadline = time.monotonic() + within
        while "natsflow ready" not in child.log_text():
            child.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} not ready after {within}s:\n{child.log_tail()}")
            await anyio.sleep(0.02)

    async def stop_children(self) -> None:
        for child in self.children:
            await child.stop()
        self.children.clear()

    async def __aenter__(self) -> Bench:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        await self.server.start()
        self.nc = await nats.connect(self.server.url, name="natsflow-bench-crash")
        first = self.spawn()
        await self.wait_ready(first)
        client = natsflow.Client(self.nc, request_timeout=30)
        await client.deploy(chain(WORKFLOW, self.settings.steps, self.settings.sleep), "yaml")
        self.watcher = await StatusWatcher.open(self.nc)
        await self.stop_children()

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await self.stop_children()
            if self.nc is not None:
                with contextlib.suppress(Exception), anyio.move_on_after(5):
                    await self.nc.close()
            await self.server.stop()

    async def completed(self, execution: str) -> set[str]:
        """Steps whose completion is in the stream now."""
        assert self.nc is not None
        loaded = await EventStore(self.nc, self.nc.jetstream(timeout=10)).load(execution)
        return {key for key, step in loaded.state.steps.items() if step.status == "completed"}

    async def run(self, mode: str, index: int, rng: random.Random) -> dict[str, Any]:
        """One execution in ``mode``; its figures."""
        assert self.nc is not None
        assert self.watcher is not None
        kill_step = rng.randint(*KILL_RANGE) if mode != "baseline" else None
        instances = [self.spawn() for _ in range(2 if mode == "takeover" else 1)]
        for child in instances:
            await self.wait_ready(child)
        other_wait = await quiet_gate(self.settings.gate_wait)
        effects = SideEffects(self.dir / f"effects-{mode}-{index}.log")
        client = natsflow.Client(self.nc, request_timeout=30)
        t0 = time.perf_counter()
        execution = (await client.start(WORKFLOW, {"path": str(effects.path)})).execution_id
        record: dict[str, Any] = {"bench": BENCH, "mode": mode, "run": index}
        completed_before: set[str] = set()
        lines_at_kill: list[list[str]] = []
        t_kill = None
        if kill_step is not None:
            line = await effects.wait_started(f"s{kill_step}", 60, instances[0])
            victim = next((c for c in instances if str(c.pid) == line[4]), None)
            record["victim_found_by_ppid"] = victim is not None
            victim = victim or instances[0]
            t_kill = time.perf_counter()
            os.kill(victim.pid, signal.SIGKILL)
            victim.proc.wait()
            lines_at_kill = effects.lines()
            for parts in SideEffects.in_flight(lines_at_kill):  # its orphans die with it
                if parts[4] == str(victim.pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(parts[3]), signal.SIGKILL)
            if mode == "restart":
                self.spawn()  # at once; it needs a few hundred ms to boot
            # Read while the new instance boots (restart) or before the survivor can get
            # far (takeover): what was completed before the kill.
            completed_before = await self.completed(execution)
            record["kill_step"] = kill_step
        finished = await self.watcher.wait(execution, within=self.settings.timeout)
        lines = effects.lines()
        await self.stop_children()
        if finished.status != "completed":
            raise RuntimeError(f"{mode} run {index}: execution {execution} {finished.status}")
        record["total_s"] = finished.seen - t0
        record["other_wait_s"] = other_wait
        if t_kill is not None:
            starts = SideEffects.starts(lines)
            reruns = {step: n - 1 for step, n in starts.items() if n > 1}
            in_flight = sorted(p[1] for p in SideEffects.in_flight(lines_at_kill))
            record.update(
                crash_to_done_s=finished.seen - t_kill,
                kill_after_s=t_kill - t0,
                completed_before_kill=len(completed_before),
                in_flight_at_kill=in_flight,
                reruns=reruns,
                rerun_completed=sum(n for s, n in reruns.items() if s in completed_before),
                rerun_in_flight=sum(n for s, n in reruns.items() if s not in completed_before),
                max_rerun_in_flight=max(
                    (n for s, n in reruns.items() if s not in completed_before), default=0
                ),
                steps_run=sum(starts.values()),
            )
        return record


def med(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    baseline = med([r for r in records if r["mode"] == "baseline"], "total_s")
    for mode in MODES:
        rows = [r for r in records if r["mode"] == mode]
        if not rows:
            continue
        row: dict[str, Any] = {"runs": len(rows), "total_s": med(rows, "total_s")}
        crash = [float(r["crash_to_done_s"]) for r in rows if "crash_to_done_s" in r]
        if crash:
            row.update(
                crash_to_done_s=statistics.median(crash),
                crash_to_done_min_s=min(crash),
                crash_to_done_max_s=max(crash),
                kill_steps=[r["kill_step"] for r in rows],
                rerun_completed=sum(int(r["rerun_completed"]) for r in rows),
                rerun_in_flight=sum(int(r["rerun_in_flight"]) for r in rows),
                max_rerun_in_flight=max(int(r["max_rerun_in_flight"]) for r in rows),
            )
            if baseline is not None and row["total_s"] is not None:
                row["total_minus_baseline_s"] = row["total_s"] - baseline
        out[mode] = {k: rnd(v) if isinstance(v, float) else v for k, v in row.items()}
    return out


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.2f}"


def table(summary: dict[str, dict[str, Any]], settings: Settings) -> str:
    head = (
        f"{'mode':<9} {'runs':>4} {'total s':>8} {'vs baseline':>11} "
        f"{'crash->done s (min-max)':>24} {'kill at':>12} {'re-runs in flight':>17} "
        f"{'of completed':>12}"
    )
    out = [head, "-" * len(head)]
    for mode, row in summary.items():
        crash = ""
        if "crash_to_done_s" in row:
            crash = (
                f"{_f(row['crash_to_done_s'])} ({_f(row['crash_to_done_min_s'])}"
                f"-{_f(row['crash_to_done_max_s'])})"
            )
        out.append(
            f"{mode:<9} {row['runs']:>4} {_f(row['total_s']):>8} "
            f"{_signed(row.get('total_minus_baseline_s')):>11} {crash:>24} "
            f"{','.join(f's{k}' for k in row.get('kill_steps', [])):>12} "
            f"{_in_flight(row):>17} {row.get('rerun_completed', ''):>12}"
        )
    wait = "default" if settings.takeover_after is None else f"{settings.takeover_after:g} s"
    out.append(
        f"{settings.steps} steps x {settings.sleep * 1000:g} ms, medians of {settings.runs} "
        f"run(s); takeover/ack wait {wait}; nats-server "
        f"{'sync_interval: always' if settings.fsync else 'lazy fsync'}; "
        "re-runs summed over runs (in flight: at most 1 per run; of completed: must be 0)"
    )
    return "\n".join(out)


def _in_flight(row: dict[str, Any]) -> str:
    if "rerun_in_flight" not in row:
        return ""
    return f"{row['rerun_in_flight']} (max {row['max_rerun_in_flight']})"


async def main(args: argparse.Namespace) -> None:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    settings = Settings(
        steps=args.steps,
        sleep=args.sleep,
        runs=1 if args.quick else args.runs,
        seed=args.seed,
        fsync=args.fsync,
        uvloop=args.uvloop,
        workers=args.workers,
        takeover_after=args.takeover_after,
        timeout=args.timeout,
        gate_wait=args.gate_wait,
        keep=args.keep,
    )
    rng = random.Random(settings.seed)
    directory = Path(tempfile.mkdtemp(prefix="natsflow-crash-", dir="/tmp"))
    records: list[dict[str, Any]] = []
    try:
        async with Bench(settings, directory) as bench:
            for mode in modes:
                for index in range(settings.runs):
                    record = await bench.run(mode, index, rng)
                    records.append(record)
                    if not args.json:
                        print(_progress(record), file=sys.stderr, flush=True)
    finally:
        if settings.keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    summary = summarize(records)
    if args.json:
        body = {"bench": BENCH, "settings": vars(settings), "summary": summary, "runs": records}
        print(json.dumps(body, default=str))
    else:
        print(table(summary, settings))


def _progress(record: dict[str, Any]) -> str:
    text = f"{record['mode']} #{record['run']}: total {record['total_s']:.2f} s"
    if "crash_to_done_s" in record:
        text += (
            f", kill at s{record['kill_step']} after {record['kill_after_s']:.2f} s,"
            f" crash->done {record['crash_to_done_s']:.2f} s, re-runs {record['reruns'] or 0}"
        )
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (medians reported)")
    parser.add_argument("--quick", action="store_true", help="one run per mode")
    parser.add_argument("--modes", default=",".join(MODES), help="comma separated, in order")
    parser.add_argument("--seed", type=int, default=7, help="seeds the kill step (10..40)")
    parser.add_argument("--steps", type=int, default=50, help="steps in the chain")
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds each step sleeps")
    parser.add_argument(
        "--takeover-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="NATSFLOW_TAKEOVER_AFTER of the serve processes (default: theirs)",
    )
    parser.add_argument(
        "--fsync", action="store_true", help="nats-server with sync_interval: always"
    )
    parser.add_argument("--uvloop", action="store_true", help="serve processes on uvloop")
    parser.add_argument("--workers", type=int, default=8, help="NATSFLOW_WORKERS of each serve")
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds an execution may take at most"
    )
    parser.add_argument(
        "--gate-wait", type=float, default=5.0, help="max seconds to wait for an idle machine"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    args = parser.parse_args(argv)
    if args.steps < KILL_RANGE[1]:
        parser.error(f"--steps: at least {KILL_RANGE[1]} (the kill comes at s10..s40)")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main(arguments), uvloop=False)
