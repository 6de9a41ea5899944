"""natsflow beside the raw nats-py + JetStream ceiling, measured in the same session.

    .venv/bin/python bench/compare.py [--skip-raw | --raw-jsonl FILE] [--uvloop | --fsync] [--reps 3]

Runs, one after the other (never at the same time), from the repository root:

1. the raw reference, ``../shared/bench/jetstream_ceiling.py --quick --suites asyncio
   --only 4 --reps 3`` (``--suites uvloop`` with ``--uvloop``), and takes measurement 4,
   "FULL step (orch append ev + cmd + worker result), subproc worker", C=100
   (steps/s, CPU per step) and C=1 (p50 latency of one step);
2. ``bench/steps.py`` (200 executions x 10 noop steps: steps/s, CPU per step);
3. ``bench/latency.py`` (1-step and 10-step executions one at a time).

and prints one table with both sides and natsflow/raw ratios. ``--fsync`` runs both
sides with ``sync_interval: always`` (the raw reference's ``sync`` suite, asyncio):
every acknowledged write on disk, the durability Restate and DBOS give by default. The machine is
shared: only numbers from the same run should be set side by side. Every child's
output is passed through; the children stop what they start, and this script
stops its children on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/compare.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RAW_BENCH, REPO

RAW_FULL = "FULL step (orch append ev + cmd + worker result), subproc worker, C={c}"
RAW_SIMPLE = "inproc worker, C={c}"

_children: list[subprocess.Popen[str]] = []


def run_child(argv: list[str], label: str) -> list[dict[str, Any]]:
    """Run a benchmark, echo its output, return its JSON lines."""
    print(f"\n### {label}: {' '.join(argv)}", flush=True)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1
    )
    _children.append(proc)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        code = proc.wait()
    finally:
        stop_child(proc)
        _children.remove(proc)
    print(f"### {label}: exit {code} after {time.perf_counter() - started:.0f}s", flush=True)
    if code != 0:
        raise SystemExit(f"{label} failed with exit code {code}")
    return records


def stop_child(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()  # our own child, by pid; it stops what it started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _med(record: dict[str, Any] | None, key: str) -> float | None:
    if record is None:
        return None
    value = record.get(key)
    if isinstance(value, dict):
        med = value.get("med")
        return float(med) if isinstance(med, int | float) else None
    return float(value) if isinstance(value, int | float) else None


def _find(records: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in records:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:,.{digits}f}"


def _ratio(ours: float | None, raw: float | None) -> str:
    if ours is None or raw is None or raw == 0 or ours != ours or raw != raw:
        return "-"
    return f"{ours / raw:.2f}x"


def table(raw: list[dict[str, Any]], steps: list[dict[str, Any]], lat: list[dict[str, Any]]) -> str:
    raw100 = _find(raw, bench="4_step_roundtrip", variant=RAW_FULL.format(c=100))
    raw1 = _find(raw, bench="4_step_roundtrip", variant=RAW_FULL.format(c=1))
    note = ""
    if raw100 is None and raw1 is None:
        # The raw 'sync' suite measures only the bare step round trip (task out, result
        # back: 2 writes), not the full step (4 writes over 3 streams): a lower bound.
        raw100 = _find(raw, bench="4_step_roundtrip", variant=RAW_SIMPLE.format(c=100))
        raw1 = _find(raw, bench="4_step_roundtrip", variant=RAW_SIMPLE.format(c=1))
        note = "raw: bare step round trip, in-process worker (the sync suite has no full step)"
    agg = next((r for r in steps if str(r.get("variant", "")).endswith("(aggregate)")), None)
    lat1 = _find(lat, bench="natsflow_latency", steps=1)
    lat_n = next(
        (r for r in lat if r.get("bench") == "natsflow_latency" and (r.get("steps") or 0) > 1),
        None,
    )
    marginal = _find(lat, variant="marginal step latency")
    n_steps = int(lat_n["steps"]) if lat_n else 10

    raw_p50_ms = (_med(raw1, "p50_us") or float("nan")) / 1e3 if raw1 else None
    raw_p99_ms = (_med(raw1, "p99_us") or float("nan")) / 1e3 if raw1 else None
    rows: list[tuple[str, float | None, float | None, int, str]] = [
        # (metric, raw, natsflow, digits, ratio note)
        ("throughput, steps/s (raw C=100 | 200 execs x 10 steps)",
         _med(raw100, "steps_per_s"), _med(agg, "steps_per_s"), 0, "higher is better"),
        ("CPU us/step, total (raw py+srv+worker | serve+worker+srv)",
         _med(raw100, "ours_cpu_us_per_op"), _med(agg, "ours_cpu_us_per_step"), 0, "lower"),
        ("  orchestrator (raw py | natsflow serve)",
         _med(raw100, "py_cpu_us_per_op"), _med(agg, "serve_cpu_us_per_step"), 0, "lower"),
        ("  worker process",
         _med(raw100, "worker_cpu_us_per_op"), _med(agg, "worker_cpu_us_per_step"), 0, "lower"),
        ("  nats-server",
         _med(raw100, "srv_cpu_us_per_op"), _med(agg, "srv_cpu_us_per_step"), 0, "lower"),
        ("latency p50 ms: raw step C=1 | 1-step execution",
         raw_p50_ms, _med(lat1, "p50_ms"), 2, "lower"),
        (f"latency p50 ms: raw step C=1 | {n_steps}-step execution / {n_steps}",
         raw_p50_ms, _med(lat_n, "per_step_p50_ms"), 2, "lower"),
        ("latency p50 ms: raw step C=1 | marginal step",
         raw_p50_ms, _med(marginal, "per_step_marginal_p50_ms"), 2, "lower"),
        ("latency p99 ms: raw step C=1 | 1-step execution",
         raw_p99_ms, _med(lat1, "p99_ms"), 2, "lower"),
    ]  # fmt: skip
    out = [
        "| metric | raw nats-py | natsflow | natsflow / raw |",
        "|---|---:|---:|---:|",
    ]
    for name, r, n, digits, _ in rows:
        out.append(f"| {name} | {_fmt(r, digits)} | {_fmt(n, digits)} | {_ratio(n, r)} |")
    if agg is not None:
        out.append("")
        out.append(
            "natsflow steps/s min-max: "
            f"{_fmt(agg['steps_per_s']['min'])}-{_fmt(agg['steps_per_s']['max'])}; "
            f"other CPU% on the machine (median): {_fmt(_med(agg, 'other_cpu_pct'))}"
        )
    if raw100 is not None:
        out.append(
            "raw C=100 steps/s min-max: "
            f"{_fmt(raw100['steps_per_s']['min'])}-{_fmt(raw100['steps_per_s']['max'])}; "
            f"other CPU% (median): {_fmt(_med(raw100, 'other_cpu_pct'))}"
        )
    if note:
        out.append(note)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-raw", action="store_true", help="natsflow only (quick iterations)")
    parser.add_argument("--raw-jsonl", help="take the raw figures from a saved run instead")
    parser.add_argument("--uvloop", action="store_true", help="uvloop on both sides")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (raw and steps.py)")
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("-n", type=int, default=300, help="latency.py 1-step executions")
    parser.add_argument("--n10", type=int, default=100, help="latency.py 10-step executions")
    parser.add_argument("--save", help="write every JSON line of the run to this file")
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="sync_interval: always on both sides (the raw reference's 'sync' suite)",
    )
    args = parser.parse_args()
    # SIGTERM -> SystemExit, so that the finally below stops the running child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    py = sys.executable
    loop_flag = ["--uvloop"] if args.uvloop else []
    loop_flag += ["--fsync"] if args.fsync else []
    raw: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    lat: list[dict[str, Any]] = []
    try:
        if args.raw_jsonl:
            text = Path(args.raw_jsonl).read_text()
            raw = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        elif not args.skip_raw:
            suite = "sync" if args.fsync else "uvloop" if args.uvloop else "asyncio"
            raw_path = Path("..") / RAW_BENCH.relative_to(REPO.parent)
            raw = run_child(
                [
                    py,
                    str(raw_path),
                    *f"--quick --suites {suite} --only 4 --reps {args.reps}".split(),
                ],
                "raw reference",
            )
        steps = run_child(
            [
                py,
                "bench/steps.py",
                *f"--reps {args.reps} --executions {args.executions}".split(),
                *loop_flag,
            ],
            "natsflow steps.py",
        )
        lat = run_child(
            [py, "bench/latency.py", "-n", str(args.n), "--n10", str(args.n10), *loop_flag],
            "natsflow latency.py",
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        for child in _children:
            stop_child(child)
    if args.save:
        with open(args.save, "w") as f:
            for r in raw + steps + lat:
                f.write(json.dumps(r) + "\n")
    loop = "uvloop" if args.uvloop else "asyncio"
    loop += ", fsync: sync_interval always" if args.fsync else ", lazy fsync (server default)"
    source = f"raw figures from {args.raw_jsonl}" if args.raw_jsonl else "same session"
    print(f"\n## natsflow vs raw nats-py + JetStream ({loop}, {source})\n", flush=True)
    print(table(raw, steps, lat), flush=True)


if __name__ == "__main__":
    main()
