"""Chaos: nats-server is stopped and restarted at random moments while 200 executions run.

The service runs in-process against a real nats-server (JetStream, file store under
``tmp_path``, fsync on every write) listening on one fixed port, so that every client
reconnects to the same address after a restart. A seeded plan (logged, and replayable
with ``NATSFLOW_CHAOS_SEED``) stops the server, gracefully or with ``kill -9``, at
random moments while the executions are started and run.

Each workflow is a chain of ``python`` steps with a durable sleep and a small fan-out
in the middle. Every step calls `effect`, a handler written as invariant 1 asks: it
records each raw run in a SQLite ledger (a real file) and applies its side effect once
per idempotency key. Afterwards, from the ledger and each execution's archived history:

(a) every execution completed;
(b) every completed step applied exactly one idempotency key, that of its completing
    attempt, and no step applied a key without completing;
(c) no run of a step started after its completion event was decided (the event's
    ``at``, taken just before it is appended).

Raw re-runs of an attempt in flight (the same key run twice: steps are at-least-once
while in flight) are allowed and reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from natsflow.actors.actions import ActionContext, ActionRegistry
from natsflow.events.errors import Unavailable
from natsflow.events.messages import idempotency_key
from natsflow.service.client import Client
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import PYTHON_MODULES, running

log = logging.getLogger(__name__)

EXECUTIONS = 200
OUTAGES = 7
FAN_OUT = (0, 1, 2)
PYTHON_STEPS = ("a", "b", *(f"fan[{part}]" for part in FAN_OUT), "d", "e")

LEDGER_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE runs (
    key TEXT NOT NULL, execution TEXT NOT NULL, step TEXT NOT NULL,
    attempt INTEGER NOT NULL, started REAL NOT NULL
);
CREATE TABLE applied (
    key TEXT PRIMARY KEY, execution TEXT NOT NULL, step TEXT NOT NULL,
    attempt INTEGER NOT NULL, at REAL NOT NULL
);
"""


def _step(name: str, pause: str, needs: str | None = None, extra: str = "") -> str:
    lines = [f"  {name}:", "    action: python"]
    if needs:
        lines.append(f"    needs: [{needs}]")
    if extra:
        lines.append(extra)
    lines += [
        "    with:",
        "      function: chaos_effect",
        f'      args: {{ledger: "${{{{ input.ledger }}}}", pause: "${{{{ input.{pause} }}}}"}}',
    ]
    return "\n".join(lines)


MANIFEST = "\n".join(
    [
        "name: chaos",
        "steps:",
        _step("a", "pause"),
        _step("b", "long", needs="a"),
        "  nap: {action: sleep, needs: [b], with: {duration: 300ms}}",
        _step("fan", "pause", needs="nap", extra='    for_each: {items: "${{ input.parts }}"}'),
        _step("d", "pause", needs="fan"),
        _step("e", "pause", needs="d"),
        'output: "${{ steps.e.output }}"',
        "",
    ]
)


# -- the handler, run by the service's workers (registered with --python-module) ------


def _write(ledger: str, sql: str, row: tuple[Any, ...]) -> bool:
    """One committed statement; whether it changed a row."""
    with contextlib.closing(sqlite3.connect(ledger, timeout=30)) as db, db:
        db.execute("PRAGMA synchronous = NORMAL")
        return db.execute(sql, row).rowcount == 1


def effect(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Record the run, work a while, then apply the effect once per idempotency key."""
    ledger, key = str(args["ledger"]), ctx.idempotency_key
    attempt = (key, ctx.execution_id, ctx.step, ctx.attempt)
    _write(ledger, "INSERT INTO runs VALUES (?, ?, ?, ?, ?)", (*attempt, time.time()))
    time.sleep(float(args["pause"]))  # the step's work: an outage may come meanwhile
    applied = _write(
        ledger, "INSERT OR IGNORE INTO applied VALUES (?, ?, ?, ?, ?)", (*attempt, time.time())
    )
    return {"key": key, "applied": applied}


def register(registry: ActionRegistry) -> None:
    registry.register_python("chaos_effect", effect)


# -- the outages ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    up: float  # seconds of service before the stop
    down: float  # seconds without a server
    how: str  # "stop" (SIGTERM, graceful) or "kill" (SIGKILL)


def outage_plan(rng: random.Random) -> list[Outage]:
    return [
        Outage(
            up=rng.uniform(1.0, 4.0),
            down=rng.uniform(0.2, 3.0),
            how=rng.choice(("stop", "kill")),
        )
        for _ in range(OUTAGES)
    ]


Window = tuple[float, float, str]  # wall-clock seconds the server stopped and was back, how


async def cause_outages(
    server: EmbeddedServer, plan: list[Outage], context: str, windows: list[Window]
) -> None:
    """Stop and restart ``server`` (same port, same store) as the plan says."""
    for number, outage in enumerate(plan, start=1):
        await anyio.sleep(outage.up)  # chaos: the moment of the stop is the plan's
        pid = server.pid
        assert server.running, f"nats-server died by itself; {context}"
        assert pid is not None
        stopped = time.time()
        if outage.how == "kill":
            os.kill(pid, signal.SIGKILL)
            await server.wait_exited()
        await server.stop()
        log.warning("outage %d/%d: %s; %s", number, len(plan), outage, context)
        await anyio.sleep(outage.down)  # chaos: how long the server stays away
        await server.start()
        windows.append((stopped, time.time(), outage.how))


@contextlib.asynccontextmanager
async def chaos_server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """A nats-server on a fixed port that fsyncs every write (a kill -9 loses no ack)."""
    config = tmp_path / "chaos.conf"
    config.write_text("jetstream {\n  sync_interval: always\n}\n")
    server = EmbeddedServer(
        config_file=str(config),
        port=free_port(),
        store_dir=str(tmp_path / "jetstream"),
        log_file=str(tmp_path / "nats-server.log"),
    )
    async with server:
        yield server


@contextlib.asynccontextmanager
async def patient_client(url: str) -> AsyncIterator[Client]:
    """The public client, reconnecting as quickly and as long as the service does."""
    client = await Client.connect(
        url, request_timeout=3, max_reconnect_attempts=-1, reconnect_time_wait=0.25
    )
    async with client:
        yield client


# -- driving and reading --------------------------------------------------------------


async def start(client: Client, number: int, input: dict[str, Any]) -> str:
    """Start execution ``number``; retried with the same idempotency key while NATS is away."""

    async def started() -> str:
        key = f"chaos-{number}"
        return (await client.start("chaos", input, idempotency_key=key)).execution_id

    return await eventually(started, within=60, interval=0.2, ignoring=(Unavailable,))


async def start_all(
    client: Client, ledger: Path, rng: random.Random, spread: float, out: list[str]
) -> None:
    """Start the executions one by one over ``spread`` seconds (so outages hit them all)."""
    for number in range(EXECUTIONS):
        input = {
            "ledger": str(ledger),
            "pause": round(rng.uniform(0.02, 0.3), 3),
            "long": round(rng.uniform(0.3, 2.0), 3),
            "parts": list(FAN_OUT),
        }
        out.append(await start(client, number, input))
        await anyio.sleep(spread / EXECUTIONS)  # chaos: the pace of the starts


async def unfinished(client: Client, executions: list[str], within: float) -> list[str]:
    """Wait until every execution is completed: [] then, else where the others stopped."""
    behind: list[str] = []

    async def completed() -> None:
        rows = {r.execution_id: r.status for r in await client.ls(workflow="chaos", limit=1000)}
        behind[:] = [e for e in executions if rows.get(e) != "completed"]
        statuses = Counter(rows.get(e, "not listed") for e in executions)
        assert not behind, f"{dict(statuses)} after {within}s; not completed: {behind[:10]}"

    try:
        await eventually(completed, within=within, interval=0.5, ignoring=(Unavailable,))
    except AssertionError as exc:
        return [str(exc), *[await where_it_stopped(client, e) for e in behind[:5]]]
    return []


async def where_it_stopped(client: Client, execution: str) -> str:
    """An unfinished execution's status, steps and last events, for a failure message."""
    view = msgspec.to_builtins(await client.show(execution))
    steps = {key: step.get("status") for key, step in (view.get("steps") or {}).items()}
    events = (await client.history(execution, all=True)).events
    last = [f"seq {e['seq']} {e['type']} {e.get('step', '')} at {e['at']:.3f}" for e in events[-6:]]
    return f"{execution}: {view.get('status')}, steps {steps}, last events {last}"


async def archived_history(client: Client, execution: str) -> list[dict[str, Any]]:
    """The execution's every event, from the archive (filled asynchronously)."""

    async def read() -> list[dict[str, Any]]:
        events = list((await client.history(execution, all=True)).events)
        assert any(e["type"] == "execution_completed" for e in events), "archive behind"
        return events

    return await eventually(read, within=20, interval=0.1, ignoring=(Unavailable,))


def ledger_rows(ledger: Path, table: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        # (key, execution, step, attempt, time): when it started (runs), was applied (applied)
        return db.execute(f"SELECT * FROM {table}").fetchall()


# -- the test -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_executions_complete_exactly_once_while_nats_server_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="natsflow")
    seed = int(os.environ.get("NATSFLOW_CHAOS_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    plan = outage_plan(rng)
    context = f"seed {seed} (NATSFLOW_CHAOS_SEED={seed} replays the plan)"
    log.warning("chaos %s: %s", context, plan)
    ledger = tmp_path / "ledger.sqlite"
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        db.executescript(LEDGER_SCHEMA)

    executions: list[str] = []
    windows: list[Window] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    async with (
        chaos_server(tmp_path) as server,
        running(
            server,
            workers=32,
            archive=True,
            python_modules=(*PYTHON_MODULES, __name__),
        ),
        patient_client(server.url) as client,
    ):
        await client.deploy(MANIFEST)
        spread = sum(o.up + o.down for o in plan) * 0.8
        async with anyio.create_task_group() as tg:
            tg.start_soon(cause_outages, server, plan, context, windows)
            tg.start_soon(start_all, client, ledger, rng, spread, executions)
        not_completed = await unfinished(client, executions, within=90)
        if not not_completed:
            histories = {e: await archived_history(client, e) for e in executions}

    assert not not_completed, f"{context}: " + "\n".join(
        f"{line}\n  service log:\n{service_log(caplog.records, line.split(':')[0])}"
        for line in not_completed
    )
    runs, applied = ledger_rows(ledger, "runs"), ledger_rows(ledger, "applied")
    log.warning("chaos %s: %s", context, summary(runs))
    problems = check(histories, runs, applied, windows)
    logged = [
        f"{problem}\n  service log:\n{service_log(caplog.records, problem.split()[0])}"
        for problem in problems[:5]
    ]
    assert not problems, f"{context}: {len(problems)} problems; the first:\n" + "\n".join(logged)


def check(
    histories: dict[str, list[dict[str, Any]]],
    runs: list[tuple[Any, ...]],
    applied: list[tuple[Any, ...]],
    windows: list[Window],
) -> list[str]:
    """(a), (b) and (c) of the module's docstring over the histories and the ledger: the
    problems found, each naming its execution and step."""
    problems: list[str] = []
    if len(histories) != EXECUTIONS:
        problems.append(f"{len(histories)} executions started, not {EXECUTIONS}")
    runs_of: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for run in runs:
        runs_of[(run[1], run[2])].append(run)
    applied_of: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in applied:
        applied_of[(row[1], row[2])].append(row)

    for execution, events in histories.items():
        # (a) completed, once, with every python step completed exactly once.
        ends = [e["type"] for e in events if e["type"].startswith("execution_")]
        if ends != ["execution_started", "execution_completed"]:
            problems.append(f"{execution}: ended with {ends}")
        scheduled = {e["step"] for e in events if e["type"] == "step_scheduled"}
        completions = [
            e for e in events if e["type"] == "step_completed" and e["step"] in scheduled
        ]
        if sorted(e["step"] for e in completions) != sorted(PYTHON_STEPS):
            problems.append(f"{execution}: completed {sorted(e['step'] for e in completions)}")
        for done in completions:
            step = done["step"]
            key = idempotency_key(execution, step, done["attempt"])
            keys_applied = [row[0] for row in applied_of.pop((execution, step), [])]
            late = [run for run in runs_of[(execution, step)] if run[4] > done["at"]]
            # (b) exactly one key applied for the step: the completing attempt's, once.
            if done["output"]["key"] != key or keys_applied != [key]:
                problems.append(
                    f"{execution} {step}: completed by {key}, output {done['output']},"
                    f" keys applied {keys_applied}"
                )
            # (c) no run started after the completion was decided.
            if late:
                problems.append(
                    f"{execution} {step}: {len(late)} run(s) started after the completion\n"
                    + story(events, execution, step, runs_of[(execution, step)], applied, windows)
                )
    # (b) no key was applied for a step that did not complete.
    problems.extend(
        f"{where}: applied {rows}, never completed" for where, rows in applied_of.items()
    )
    return problems


def story(
    events: list[dict[str, Any]],
    execution: str,
    step: str,
    runs: list[tuple[Any, ...]],
    applied: list[tuple[Any, ...]],
    windows: list[Window],
) -> str:
    """The step's events, runs and the outages around them in time order."""
    lines = [
        (e["at"], f"event seq {e['seq']} {e['type']} attempt {e.get('attempt')}")
        for e in events
        if e.get("step") == step
    ]
    lines += [(run[4], f"run of {run[0]} started") for run in runs]
    lines += [
        (row[4], f"effect of {row[0]} applied")
        for row in applied
        if (row[1], row[2]) == (execution, step)
    ]
    begin, end = min(at for at, _ in lines) - 3, max(at for at, _ in lines) + 3
    for stopped, back, how in windows:
        if begin <= back and stopped <= end:
            lines += [(stopped, f"nats-server down ({how})"), (back, "nats-server back")]
    lines.sort()
    return "\n".join(f"    {at:.3f} {text}" for at, text in lines)


def service_log(records: list[logging.LogRecord], execution: str) -> str:
    """What the service logged about ``execution`` (its exceptions included)."""
    lines = []
    for record in records:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        if execution in text:
            lines.append(f"    {record.created:.3f} {record.name}: {text}")
    return "\n".join(lines)


def summary(runs: list[tuple[Any, ...]]) -> str:
    keys = Counter(run[0] for run in runs)
    reruns = {key: n for key, n in keys.items() if n > 1}
    return (
        f"{len(runs)} raw runs of {len(keys)} attempts; {len(reruns)} attempts ran more than"
        f" once ({sum(reruns.values()) - len(reruns)} extra runs)"
    )
