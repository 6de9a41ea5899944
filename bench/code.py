"""Code workflows beside manifests and the raw reference, measured in the same session.

    .venv/bin/python bench/code.py [--fsync] [--reps 3] [--executions 200] [--skip-raw]

Runs, one after the other (never at the same time), from the repository root:

1. the raw reference, ``../shared/bench/jetstream_ceiling.py --quick --suites asyncio
   --only 4 --reps 3`` (the ``sync`` suite with ``--fsync``);
2. ``bench/steps.py``: 200 executions x 10 noop steps of a manifest (serve decides,
   ``natsflow worker`` runs the steps);
3. ``bench/steps.py --code``: the same chain as a code workflow (``bench/code_app.py``)
   in a ``natsflow worker --app`` process (it decides and runs the steps),

and prints one table: steps/s, CPU per step, code/manifest and natsflow/raw ratios,
and the app's fresh replays per execution (the sticky cache: about 1, not 10).
The target of issue 11: code within 1.5x of the manifest.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/code.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RAW_BENCH, REPO
from bench.compare import RAW_FULL, RAW_SIMPLE, _children, _find, _fmt, _med, run_child, stop_child


def _aggregate(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in records if str(r.get("variant", "")).endswith("(aggregate)")), None)


def table(
    raw: list[dict[str, Any]], manifest: list[dict[str, Any]], code: list[dict[str, Any]]
) -> str:
    raw100 = _find(raw, bench="4_step_roundtrip", variant=RAW_FULL.format(c=100)) or _find(
        raw, bench="4_step_roundtrip", variant=RAW_SIMPLE.format(c=100)
    )
    m, c = _aggregate(manifest), _aggregate(code)
    replays = _find(code, variant="code replays")
    rows = [
        ("steps/s (median)", "steps_per_s", _med(raw100, "steps_per_s")),
        ("CPU us/step, natsflow processes", "natsflow_cpu_us_per_step", None),
        ("CPU us/step, nats-server", "srv_cpu_us_per_step", None),
        ("NATS messages/step into nats-server", "srv_in_msgs_per_step", None),
    ]
    lines = [
        f"{'':40} {'raw':>9} {'manifest':>9} {'code':>9} {'manifest/code':>13}",
    ]
    for label, key, raw_value in rows:
        mv, cv = _med(m, key), _med(c, key)
        ratio = "-"
        if mv and cv:
            ratio = f"{(mv / cv if key == 'steps_per_s' else cv / mv):.2f}x"
        lines.append(
            f"{label:40} {_fmt(raw_value):>9} {_fmt(mv, 1):>9} {_fmt(cv, 1):>9} {ratio:>13}"
        )
    if replays is not None:
        lines.append(
            f"code: {replays['replays']} fresh replays for {replays['executions']} executions"
            f" of {replays['steps_per_execution']} steps"
            f" ({replays['replays_per_execution']} per execution)"
        )
    mv, cv = _med(m, "steps_per_s"), _med(c, "steps_per_s")
    if mv and cv:
        verdict = "within" if mv / cv <= 1.5 else "NOT within"
        lines.append(f"code is {verdict} 1.5x of the manifest ({mv / cv:.2f}x slower)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--fsync", action="store_true", help="sync_interval: always everywhere")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--save", help="write every JSON line of the run to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    py = sys.executable
    flags = ["--fsync"] if args.fsync else []
    common = [*f"--reps {args.reps} --executions {args.executions}".split(), *flags]
    raw: list[dict[str, Any]] = []
    try:
        if not args.skip_raw:
            suite = "sync" if args.fsync else "asyncio"
            raw_path = Path("..") / RAW_BENCH.relative_to(REPO.parent)
            quick = f"--quick --suites {suite} --only 4 --reps {args.reps}"
            raw = run_child([py, str(raw_path), *quick.split()], "raw reference")
        manifest = run_child([py, "bench/steps.py", *common], "manifest (steps.py)")
        code = run_child([py, "bench/steps.py", "--code", *common], "code (steps.py --code)")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        for child in _children:
            stop_child(child)
    if args.save:
        with open(args.save, "w") as f:
            for r in raw + manifest + code:
                f.write(json.dumps(r) + "\n")
    mode = "fsync: sync_interval always" if args.fsync else "lazy fsync (server default)"
    print(f"\n## code vs manifest vs raw (asyncio, {mode}, same session)\n", flush=True)
    print(table(raw, manifest, code), flush=True)


if __name__ == "__main__":
    main()
