"""``natsflow``: the service and the admin CLI.

Exit codes: 0 success, 1 the execution failed (``start --wait``, ``watch``) or the
service answered with an error (not found, refused: a dead letter that cannot be
redriven), 2 invalid input (manifest, ``--input``, flags),
3 no natsflow service reachable (NATS unreachable, no service, or a 503).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, get_args

import anyio
import msgspec
import orjson

from natsflow.events.errors import InputError, ManifestError, NatsflowError, Unavailable
from natsflow.events.model import ExecutionStatus
from natsflow.events.views import Started
from natsflow.manifests.loader import FORMATS, load_manifest
from natsflow.service.app import serve
from natsflow.service.client import DEFAULT_URL, Client
from natsflow.service.config import load_config
from natsflow.service.contract import MESSAGES, shipped
from natsflow.service.indexing import rebuild_index
from natsflow.service.protocol import (
    DEFAULT_CANCEL_REASON,
    REQUEST_TYPES,
    AdminRequest,
    DeployRequest,
    DlqRedriveRequest,
    StartRequest,
    request_from,
)
from natsflow.service.replay_cli import add_replay_parser, replay_command
from natsflow.service.roles import add_auth_parser, auth_text
from natsflow.service.steplines import step_line
from natsflow.service.watch import follow, screen_for


def _fail(exc: Exception, code: int) -> NoReturn:
    print(f"natsflow: {exc}", file=sys.stderr)
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="natsflow", description="Durable workflows on NATS JetStream")
    p.add_argument("--nats-url", help="NATS server(s); default $NATS_URL or " + DEFAULT_URL)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the service (embedded nats-server unless NATS_URL)")
    s.add_argument("--deploy", action="append", default=[], help="manifest file or directory")
    s.add_argument("--workers", type=int, help="concurrent tasks in this process (0: none)")
    s.add_argument("--http-port", type=int, help="HTTP sidecar port (0: off)")
    s.add_argument("--data-dir", help="embedded server store and logs")
    s.add_argument(
        "--python-module", action="append", default=[], help="module with register(registry)"
    )

    w = sub.add_parser("worker", help="run worker actors only")
    w.add_argument("--workers", type=int, help="concurrent tasks")
    w.add_argument(
        "--http-port", type=int, help="HTTP port for /healthz and /metrics (default: off)"
    )
    w.add_argument(
        "--python-module", action="append", default=[], help="module with register(registry)"
    )
    w.add_argument(
        "--app",
        action="append",
        default=[],
        help="module of @workflow/@step code workflows to run here (repeatable: one app)",
    )
    w.add_argument("--app-name", help="the app's name (default: the module's NATSFLOW_APP)")

    d = sub.add_parser("deploy", help="validate and deploy a manifest")
    d.add_argument("file")
    d.add_argument("--json", action="store_true")

    st = sub.add_parser("start", help="start an execution of the latest version")
    st.add_argument("workflow")
    st.add_argument("--input", default="null", help="workflow input as JSON")
    st.add_argument("--idempotency-key")
    st.add_argument("--wait", action="store_true", help="wait, print the output, exit 0/1")
    st.add_argument("--timeout", type=float, default=0, help="seconds to --wait (0: forever)")
    st.add_argument("--json", action="store_true")

    ls = sub.add_parser("ls", help="list executions (from the execution index), newest first")
    _ls_flags(ls)
    stats = sub.add_parser("stats", help="executions by workflow and status over a window")
    stats.add_argument("--workflow")
    stats.add_argument("--since", help="started since: 1h (ago), 7d, an RFC 3339 time, Unix s")
    stats.add_argument("--until", help="started before (the same forms)")
    stats.add_argument("--json", action="store_true")
    ix = sub.add_parser("index", help="the execution index (SQLite, under the data directory)")
    ix_verbs = ix.add_subparsers(dest="index_command", required=True)
    rb = ix_verbs.add_parser("rebuild", help="refill it from the streams")
    rb.add_argument("--data-dir", help="the service's data directory (default ./data)")

    for verb, text in (("show", "an execution's status and steps"), ("history", "its events")):
        v = sub.add_parser(verb, help=text)
        v.add_argument("execution_id")
        v.add_argument("--json", action="store_true")
        if verb == "history":
            v.add_argument("--all", action="store_true", help="full trail from the archive stream")

    wa = sub.add_parser(
        "watch", help="follow an execution live, one line per step (exit 0 completed, 1 not)"
    )
    wa.add_argument("execution_id")
    wa.add_argument("--json", action="store_true", help="each new view as one JSON line")

    c = sub.add_parser("cancel", help="cancel a running execution")
    c.add_argument("execution_id")
    c.add_argument("--reason", default=DEFAULT_CANCEL_REASON)
    c.add_argument("--json", action="store_true")

    r = sub.add_parser("resume", help="resume a failed execution from where it failed")
    r.add_argument("execution_id")
    r.add_argument("--from", dest="from_step", help="re-run this step and all that depend on it")
    r.add_argument("--json", action="store_true")
    for verb, text in (("pause", "dispatch nothing new"), ("unpause", "go on after a pause")):
        v = sub.add_parser(verb, help=f"{text} (running steps finish)")
        v.add_argument("execution_id")
        v.add_argument("--json", action="store_true")
    sg = sub.add_parser("signal", help="send a signal to a running execution")
    sg.add_argument("execution_id")
    sg.add_argument("name")
    sg.add_argument("--data", default="null", help="the signal's data as JSON")
    sg.add_argument("--id", help="the signal's id: sent again with the same id, it counts once")
    sg.add_argument("--json", action="store_true")

    wf = sub.add_parser("workflows", help="list deployed workflows")
    wf.add_argument("--json", action="store_true")
    tr = sub.add_parser("triggers", help="list triggers: pending messages, next due, last fire")
    tr.add_argument("--json", action="store_true")
    _dlq_parser(sub)
    add_auth_parser(sub)
    add_replay_parser(sub)
    sc = sub.add_parser("schema", help="print a message's JSON Schema (none: list the names)")
    sc.add_argument("name", nargs="?")
    return p


def _ls_flags(ls: argparse.ArgumentParser) -> None:
    ls.add_argument("--status", choices=(*get_args(ExecutionStatus), "expired"))
    ls.add_argument("--workflow")
    ls.add_argument("--since", help="started since: 1h (ago), 7d, an RFC 3339 time, Unix s")
    ls.add_argument("--until", help="started before (the same forms)")
    ls.add_argument("--error", help="whose error message contains this text")
    ls.add_argument("--parent", help="children of this execution")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--after", help="the cursor a page printed: the page after it")
    ls.add_argument("--count", action="store_true", help="how many match, not the rows")
    ls.add_argument("--json", action="store_true")


def _dlq_parser(sub: Any) -> None:
    q = sub.add_parser("dlq", help="dead letters: list, show, redrive, purge")
    verbs = q.add_subparsers(dest="dlq_command", required=True)
    ls = verbs.add_parser("ls", help="list dead letters, oldest first")
    ls.add_argument("--reason", help="only those of this reason (inbox, result, task, ...)")
    ls.add_argument("--after", type=int, default=0, help="only ids above this one (paging)")
    ls.add_argument("--limit", type=int, default=50)
    show = verbs.add_parser("show", help="one dead letter: why, where from, headers, payload")
    show.add_argument("id", type=int)
    redrive = verbs.add_parser("redrive", help="send dead letters back to their subjects")
    redrive.add_argument("id", type=int, nargs="?")
    redrive.add_argument("--all", action="store_true", help="every redrivable dead letter")
    redrive.add_argument("--reason", help="with --all: only those of this reason")
    redrive.add_argument("--input", help="JSON to send instead of the payload (with an ID)")
    purge = verbs.add_parser("purge", help="delete dead letters")
    purge.add_argument("id", type=int, nargs="?")
    purge.add_argument("--all", action="store_true", help="every dead letter")
    purge.add_argument("--reason", help="every dead letter of this reason")
    for verb in (ls, show, redrive, purge):
        verb.add_argument("--json", action="store_true")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("NATSFLOW_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "auth":
            print(auth_text(args), end="")
        elif args.command == "schema":
            _schema(args.name)
        elif args.command == "replay":
            sys.exit(replay_command(args))
        elif args.command in ("serve", "worker"):
            anyio.run(_serve, args, backend_options=_loop_options())
        elif args.command == "index":
            anyio.run(_index, args)
        else:
            anyio.run(_client, args)
    except (InputError, ManifestError) as exc:
        _fail(exc, 2)
    except Unavailable as exc:
        _fail(exc, 3)
    except NatsflowError as exc:
        _fail(exc, 1)
    except KeyboardInterrupt:
        sys.exit(130)


def _schema(name: str | None) -> None:
    """``natsflow schema [NAME]``: no NATS needed (the files ship in the package)."""
    if name is None:
        width = max(map(len, MESSAGES))
        for known, (_, summary, _) in MESSAGES.items():
            print(f"{known:<{width}}  {summary}")
        return
    try:
        print(shipped(name), end="")
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


def _loop_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _serve(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {
        "nats_url": args.nats_url,
        "workers": args.workers,
        "http_port": args.http_port,
    }
    if args.command == "serve":
        overrides["data_dir"] = args.data_dir
        if args.deploy:
            overrides["deploy_paths"] = tuple(args.deploy)
    if args.python_module:
        overrides["python_modules"] = tuple(args.python_module)
    if args.command == "worker":
        # A worker joins a running natsflow; it never starts a server of its own.
        if not args.nats_url and not os.environ.get("NATS_URL"):
            overrides["nats_url"] = DEFAULT_URL
        if args.http_port is None and not os.environ.get("NATSFLOW_HTTP_PORT"):
            overrides["http_port"] = 0
    config = load_config(os.environ, **overrides)
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(_stop_on_signal, stopping, tg.cancel_scope)
        if args.command == "worker" and args.app:
            await _serve_app(config, args, stopping)
        else:
            await serve(config, actors=args.command == "serve", stopping=stopping)
        tg.cancel_scope.cancel()


async def _serve_app(config: Any, args: argparse.Namespace, stopping: anyio.Event) -> None:
    """``natsflow worker --app module``: a code app's actors and steps, until stopped."""
    from natsflow.actors.apps import Worker

    sys.path.insert(0, os.getcwd())  # the app's modules, as ``python -m`` would find them
    worker = Worker(
        config.nats_url or DEFAULT_URL,
        app=list(args.app),
        name=args.app_name,
        concurrency=config.workers or 16,
        ack_wait=config.takeover_after,
        drain_grace=config.drain_grace,
    )
    async with worker:
        logging.getLogger("natsflow").info("natsflow worker ready (pid %s)", os.getpid())
        await stopping.wait()


async def _stop_on_signal(
    stopping: anyio.Event,
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The first SIGTERM or SIGINT drains the service; a second one stops it at once."""
    log = logging.getLogger("natsflow")
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if stopping.is_set():
                log.warning("%s again: stopping now", name)
                scope.cancel()
                return
            log.info("%s: draining (send it again to stop at once)", name)
            stopping.set()


async def _index(args: argparse.Namespace) -> None:
    config = load_config(os.environ, data_dir=args.data_dir)
    url = args.nats_url or os.environ.get("NATS_URL") or DEFAULT_URL
    print(await rebuild_index(url, config.data_dir))


async def _client(args: argparse.Namespace) -> None:
    request = _prepare(args)  # validate locally first: exit 2 without touching NATS
    url = args.nats_url or os.environ.get("NATS_URL") or DEFAULT_URL
    # Redriving every dead letter takes a publish and a delete each: give it time.
    timeout = 300.0 if isinstance(request, DlqRedriveRequest) and request.all else 10.0
    client = await Client.connect(
        url,
        request_timeout=timeout,
        connect_timeout=3,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        error_cb=_quiet,
    )
    async with client:
        await _run_verb(client, args, request)


async def _quiet(exc: Exception) -> None:
    """The CLI reports connection errors once, itself, instead of nats-py's tracebacks."""


def _prepare(args: argparse.Namespace) -> AdminRequest:
    """The request a client verb sends, validated (``InputError``: exit 2)."""
    if args.command == "dlq":
        return _prepare_dlq(args)
    if args.command == "deploy":
        path = Path(args.file)
        if path.suffix not in FORMATS:
            raise InputError(f"{path}: expected a .yaml, .yml, .toml or .json manifest")
        try:
            load_manifest(path)  # raises ManifestError listing every problem
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
        return DeployRequest(manifest=text, format=FORMATS[path.suffix], source=str(path))
    fields: dict[str, Any] = {}
    if args.command == "start":
        data = _json_flag("--input", args.input)
        fields = {"workflow": args.workflow, "input": data, "idempotency_key": args.idempotency_key}
    elif args.command == "ls":
        names = ("status", "workflow", "since", "until", "error", "parent", "limit", "after")
        fields = {name: getattr(args, name) for name in names}
        fields["count"] = args.count
    elif args.command == "stats":
        fields = {"workflow": args.workflow, "since": args.since, "until": args.until}
    elif args.command == "history":
        fields = {"execution_id": args.execution_id, "all": args.all}
    elif args.command == "cancel":
        fields = {"execution_id": args.execution_id, "reason": args.reason}
    elif args.command in ("show", "pause", "unpause"):
        fields = {"execution_id": args.execution_id}
    elif args.command == "resume":
        fields = {"execution_id": args.execution_id, "from_step": args.from_step}
    elif args.command == "signal":
        data = _json_flag("--data", args.data)
        fields = {"execution_id": args.execution_id, "name": args.name, "data": data, "id": args.id}
    elif args.command == "watch":  # watch reads show as the execution goes
        return request_from(REQUEST_TYPES["show"], {"execution_id": args.execution_id})
    return request_from(REQUEST_TYPES[args.command], fields)


def _prepare_dlq(args: argparse.Namespace) -> AdminRequest:
    verb = args.dlq_command
    fields: dict[str, Any] = {}
    if verb == "ls":
        fields = {"reason": args.reason, "after": args.after, "limit": args.limit}
    elif verb == "show":
        fields = {"id": args.id}
    elif verb in ("redrive", "purge"):
        fields = {"id": args.id, "all": args.all, "reason": args.reason}
        if verb == "redrive" and args.input is not None:
            fields["input"] = _json_flag("--input", args.input)
    return request_from(REQUEST_TYPES[f"dlq.{verb}"], fields)


def _json_flag(flag: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{flag}: invalid JSON ({exc}): {text!r}") from None


async def _run_verb(client: Client, args: argparse.Namespace, request: AdminRequest) -> None:
    if args.command == "watch":
        sys.exit(await follow(client, args.execution_id, screen_for(sys.stdout, as_json=args.json)))
    if isinstance(request, StartRequest) and args.wait:
        started = await client.request(request, Started)
        try:
            final = await client.wait(started.execution_id, within=args.timeout or None)
        except TimeoutError as exc:
            _fail(exc, 1)
        _print(args, msgspec.to_builtins(final), _render_show)
        if final.status != "completed":
            sys.exit(1)
        return
    result = await client.request(request, object)  # plain JSON values: printed as they come
    renderers = {
        "show": _render_show,
        "history": _render_history,
        "ls": _render_ls,
        "stats": _render_stats,
        "dlq.ls": _render_dlq_ls,
        "dlq.show": _render_dlq_show,
        "dlq.redrive": _render_redriven,
        "triggers": _render_triggers,
    }
    verb = f"dlq.{args.dlq_command}" if args.command == "dlq" else args.command
    _print(args, result, renderers.get(verb, _render_plain))


def _print(args: argparse.Namespace, result: Any, render: Any) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(result) + "\n")


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _render_plain(result: Any) -> str:
    if isinstance(result, dict):
        return "  ".join(f"{k}={v}" for k, v in result.items())
    if isinstance(result, list):
        return "\n".join(_render_plain(r) for r in result) or "(none)"
    return str(result)


def _render_ls(page: dict[str, Any]) -> str:
    if page.get("count") is not None:
        return str(page["count"])
    lines = [f"{'EXECUTION':40} {'WORKFLOW':20} {'STATUS':10} {'STARTED':23} {'STEPS':>7} ERROR"]
    for r in page["executions"]:
        total = r.get("steps_total")
        steps = f"{r.get('steps_done', 0)}/{'?' if total is None else total}"
        lines.append(
            f"{r['execution_id']:40} {r['workflow']:20}"
            f" {'paused' if r.get('paused') else r['status']:10} {_ts(r.get('started_at')):23}"
            f" {steps:>7} {(r.get('error') or '')[:80]}"
        )
    if page.get("next"):
        lines.append(f"# more: --after {page['next']}")
    if page.get("lag"):
        lines.append(f"# the index is {page['lag']} changes behind")
    return "\n".join(lines)


def _render_stats(stats: dict[str, Any]) -> str:
    lines = [f"{'WORKFLOW':30} {'STATUS':10} {'COUNT':>9}"]
    lines += [f"{r['workflow']:30} {r['status']:10} {r['count']:>9}" for r in stats["rows"]]
    lines.append(f"{'total':41} {stats['total']:>9}")
    return "\n".join(lines)


def _render_show(s: dict[str, Any]) -> str:
    lines = [
        f"execution  {s['execution_id']}",
        f"workflow   {s['workflow']} (version {s['version']})",
        f"status     {s['status']}{' (paused)' if s.get('paused') else ''}   steps {s['steps_done']}/{s['steps_total']}"
        + (f"   current: {', '.join(s['current'])}" if s["current"] else ""),
        f"started    {_ts(s['started_at'])}   finished {_ts(s['finished_at'])}",
        f"resume at  {s['resume_at'] + '   ' if s.get('resume_at') else ''}event"
        f" {s['resume_point']['events']} (stream seq {s['resume_point']['stream_seq']})",
    ]
    if s["error"]:
        lines.append(f"error      {s['error']}")
    if parent := s.get("parent"):
        lines.append(f"parent     {parent['execution_id']} (step {parent['step']})")
    if s.get("parked"):
        p = s["parked"]
        lines.append(
            f"parked     {p['what']} {p['subject']} seq {p['seq']} cannot be decoded;"
            f" its copy is in natsflow.dlq.{p['what']}"
        )
    lines.append("steps:")
    for key, step in s["steps"].items():
        lines.append(step_line(key, step))
        lines.extend(
            f"      attempt {a['attempt']} at {_ts(a['started_at'])}: {a['error']}"
            for a in step["attempts"]
            if a.get("error")
        )
    if s["status"] == "completed":
        lines.append("output:")
        lines.append(orjson.dumps(s["output"], option=orjson.OPT_INDENT_2).decode())
    return "\n".join(lines)


def _render_history(h: dict[str, Any]) -> str:
    lines = []
    if "note" in h:
        lines.append(f"# {h['note']}")
    for e in h["events"]:
        fields = {k: v for k, v in e.items() if k not in ("seq", "type", "at")}
        lines.append(f"{e['seq']:>8} {_ts(e['at'])} {e['type']:20} {orjson.dumps(fields).decode()}")
    return "\n".join(lines)


def _render_triggers(page: dict[str, Any]) -> str:
    lines = [f"{'WORKFLOW':20} {'#':>2} {'KIND':7} {'ON':32} {'PENDING':>7} {'LAST FIRE':23} NEXT"]
    for r in page["triggers"]:
        on = r.get("subject") or r.get("schedule") or "-"
        if r.get("timezone"):
            on += f" ({r['timezone']})"
        pending = r.get("pending")
        counted = "-" if r["kind"] != "subject" else ("?" if pending is None else str(pending))
        line = (
            f"{r['workflow']:20} {r['index']:>2} {r['kind']:7} {on:32} {counted:>7}"
            f" {_ts(r.get('last_fired_at')):23} {_ts(r.get('next_due'))}"
        )
        if not r["enabled"]:
            line += "  (disabled)"
        if r.get("note"):
            line += f"  # {r['note']}"
        lines.append(line)
    return "\n".join(lines) if page["triggers"] else "(no triggers deployed)"


def _render_dlq_ls(page: dict[str, Any]) -> str:
    rows = page["dead_letters"]
    lines = [f"{'ID':>8} {'REASON':10} {'TIME':23} {'SIZE':>8} {'SUBJECT':32} ERROR"]
    lines += [
        f"{r['id']:>8} {r['reason']:10} {_ts(r['at']):23} {r['size']:>8} {r['subject']:32}"
        f" {r['error'][:100]}" + ("" if r["redrivable"] else "  (not redrivable)")
        for r in rows
    ]
    lines.append(f"# {len(rows)} shown of {page['total']}")
    return "\n".join(lines)


def _render_dlq_show(d: dict[str, Any]) -> str:
    lines = [
        f"dead letter {d['id']}   reason {d['reason']}   at {_ts(d['at'])}   {d['size']} bytes",
        f"subject     {d['subject'] or '-'}",
        f"error       {d['error']}",
        "redrive     "
        + (f"not possible: {d['not_redrivable']}" if d.get("not_redrivable") else "possible"),
    ]
    for title, headers in (("headers", d["headers"]), ("original headers", d["original_headers"])):
        if headers:
            lines.append(f"{title}:")
            lines.extend(f"  {name}: {value}" for name, value in headers.items())
    payload_format = d["payload_format"]
    cut = " (first part)" if d.get("truncated") else ""
    lines.append(f"payload ({payload_format}{cut}):")
    if payload_format == "json":
        lines.append(orjson.dumps(d.get("payload"), option=orjson.OPT_INDENT_2).decode())
    elif payload_format != "empty":
        lines.append(str(d.get("payload")))
    return "\n".join(lines)


def _render_redriven(r: dict[str, Any]) -> str:
    lines = [
        f"redriven {x['id']} -> {x['subject']} ({x['stream']} seq {x['seq']})"
        for x in r["redriven"]
    ]
    lines += [f"skipped  {x['id']}: {x['reason']}" for x in r.get("skipped", ())]
    lines.append(f"# {r.get('redriven_count', 0)} redriven, {r.get('skipped_count', 0)} skipped")
    return "\n".join(lines)
