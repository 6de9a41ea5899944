"""``natsflow replay FILE... --app module``: recorded histories against the current code.

For CI before a deploy: each file is ``natsflow history ID --json`` output (``--all``
when snapshots compacted the execution; a directory: its ``*.json``). Prints one
line per file, ``ok`` or the ``NondeterminismError`` (position, the call the code
makes there, the one recorded); exits 1 if any history no longer replays, 2 if a
file cannot be read or names a workflow the app does not define. Needs no NATS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import msgspec

from natsflow.events.errors import NondeterminismError


def add_replay_parser(sub: Any) -> None:
    rp = sub.add_parser("replay", help="check recorded histories against a code app (for CI)")
    rp.add_argument("files", nargs="+", help="`natsflow history ID --json` files or directories")
    rp.add_argument("--app", action="append", required=True, help="the app's module (repeatable)")
    rp.add_argument("--app-name", help="the app's name (default: the module's NATSFLOW_APP)")
    rp.add_argument("--json", action="store_true")


def replay_command(args: argparse.Namespace) -> int:
    """Run ``natsflow replay``; the exit code."""
    from natsflow.code.definition import load_app
    from natsflow.service.replayer import check_files

    sys.path.insert(0, os.getcwd())  # the app's modules, as ``python -m`` would find them
    app = load_app(list(args.app), args.app_name)
    outcomes = check_files(args.files, app)
    rows = []
    for path, outcome in outcomes:
        if isinstance(outcome, Exception):
            verdict = "nondeterminism" if isinstance(outcome, NondeterminismError) else "error"
            rows.append({"file": str(path), "result": verdict, "error": str(outcome)})
        else:
            rows.append({"file": str(path), "result": "ok", **dataclasses.asdict(outcome)})
    if args.json:
        print(msgspec.json.encode(rows).decode())
    for row in rows if not args.json else ():
        if row["result"] == "ok":
            print(
                f"ok     {row['file']}: {row['workflow']} {row['execution']} ({row['status']},"
                f" {row['calls']} calls replayed)"
            )
        else:
            print(f"FAILED {row['file']}: {row['error']}")
    if not rows:
        print("no history files found", file=sys.stderr)
        return 2
    if any(r["result"] == "error" for r in rows):
        return 2
    return 1 if any(r["result"] != "ok" for r in rows) else 0
