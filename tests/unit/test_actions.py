"""Built-in step actions against local processes and a local HTTP server (no NATS)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

import natsflow.actors.actions
from natsflow.actors.actions import (
    IDEMPOTENCY_HEADER,
    ActionContext,
    ActionRegistry,
    builtin_registry,
)
from natsflow.actors.actions import _shell as shell_module
from natsflow.events.errors import RetryableStepError, StepError, TerminalStepError
from tests.eventually import eventually

PY = sys.executable


def make_ctx(progress: Callable[[str], Awaitable[None]] | None = None) -> ActionContext:
    async def ignore(text: str) -> None:
        pass

    return ActionContext(
        execution_id="ex-1",
        step="fetch",
        attempt=2,
        idempotency_key="ex-1:fetch:2",
        report_progress=progress or ignore,
        nc=None,
    )


async def run(action: str, params: dict[str, Any], ctx: ActionContext | None = None) -> Any:
    return await builtin_registry().get(action)(ctx or make_ctx(), params)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, never reaped by the host's init) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_dead(pid: int, within: float = 5.0) -> None:
    async def dead() -> None:  # nothing signals an orphan's reaping: poll
        assert not alive(pid), f"process {pid} still alive"

    await eventually(dead, within=within, interval=0.02)


# -- public surface -----------------------------------------------------------------


def test_public_names() -> None:
    assert sorted(natsflow.actors.actions.__all__) == sorted(
        [
            "ERROR_HEADER",
            "ERROR_KIND_HEADER",
            "ERROR_RETRYABLE_HEADER",
            "IDEMPOTENCY_HEADER",
            "PROGRESS_PREFIX",
            "Action",
            "ActionContext",
            "ActionRegistry",
            "PythonFunction",
            "builtin_registry",
            "http",
            "nats_request",
            "noop",
            "python_action",
            "shell",
        ]
    )
    assert builtin_registry().actions() == ("http", "nats.request", "noop", "python", "shell")


def test_unknown_action_is_terminal_and_named() -> None:
    with pytest.raises(TerminalStepError, match="unknown action 'sheel'") as info:
        builtin_registry().get("sheel")
    assert info.value.kind == "not_found"


def test_registering_twice_is_refused() -> None:
    registry = ActionRegistry()
    registry.register_python("f", lambda ctx, args: None)
    with pytest.raises(ValueError, match="'f' is already registered"):
        registry.register_python("f", lambda ctx, args: None)


async def test_noop_returns_its_params() -> None:
    assert await run("noop", {"a": 1}) == {"a": 1}
    assert await run("noop", {}) is None


# -- shell --------------------------------------------------------------------------


async def test_shell_json_stdout_is_the_output() -> None:
    out = await run("shell", {"argv": py('print(\'{"rows": 3, "ok": true}\')')})
    assert out == {"rows": 3, "ok": True}


async def test_shell_plain_stdout() -> None:
    out = await run("shell", {"argv": py("print('hello'); print('world')")})
    assert out == {"stdout": "hello\nworld\n"}


async def test_shell_long_plain_stdout_keeps_the_tail() -> None:
    out = await run("shell", {"argv": py("print('x' * 200_000 + 'END')")})
    assert out["truncated"] is True
    assert len(out["stdout"]) == 64 << 10
    assert out["stdout"].endswith("END\n")


async def test_shell_progress_lines_are_reported_in_order_and_left_out() -> None:
    seen: list[str] = []

    async def progress(text: str) -> None:
        seen.append(text)

    code = (
        "print('[PROGRESS] 1/3', flush=True)\n"
        "print('[PROGRESS]   2/3  ', flush=True)\n"
        "print('[1, 2]')\n"
        "print('[PROGRESS] 3/3')\n"
    )
    out = await run("shell", {"argv": py(code)}, make_ctx(progress))
    assert seen == ["1/3", "2/3", "3/3"]
    assert out == [1, 2]


async def test_shell_nonzero_exit_is_retryable_with_stderr_tail() -> None:
    code = "import sys; sys.stderr.write('x' * 10000 + 'disk full'); sys.exit(3)"
    with pytest.raises(RetryableStepError) as info:
        await run("shell", {"argv": py(code)})
    assert info.value.kind == "exit_code"
    assert "exit code 3" in info.value.message
    assert info.value.message.endswith("disk full")
    assert len(info.value.message) < 5000


async def test_shell_argv_as_string_is_refused() -> None:
    with pytest.raises(TerminalStepError, match="never a shell string") as info:
        await run("shell", {"argv": "echo hi; rm -rf /"})
    assert info.value.kind == "bad_params"
    assert info.value.message.startswith('shell: with.argv: expected non-empty list of str, got "')


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        # These deployed fine once and failed only here; now both ends refuse them.
        (
            "shell",
            {"argv": ["cat"], "stdin": {"a": 1}},
            'shell: with.stdin: expected str, got {"a":1}',
        ),
        (
            "nats.request",
            {"subject": "x", "timeout": 0},
            "nats.request: with.timeout: expected duration > 0, got 0",
        ),
        (
            "http",
            {"url": "http://127.0.0.1:1/", "method": "FETCH", "colour": 1},
            "http: with.method: expected str matching",
        ),
        ("python", {"function": "f", "args": []}, "python: with.args: expected mapping, got []"),
    ],
)
async def test_bad_params_are_terminal_and_name_the_field(
    action: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(TerminalStepError) as info:
        await run(action, params)
    assert info.value.kind == "bad_params"
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize(
    "params",
    [{"argv": []}, {"argv": ["echo", 1]}, {}],
)
async def test_shell_bad_params_are_terminal(params: dict[str, Any]) -> None:
    with pytest.raises(TerminalStepError) as info:
        await run("shell", params)
    assert info.value.kind == "bad_params"


async def test_a_key_only_newer_code_knows_is_ignored_at_run_time() -> None:
    """Deploy refuses an unknown ``with`` key; a worker running a task rendered by a
    newer natsflow (rolling upgrade) carries it out with the keys it knows."""
    assert await run("shell", {"argv": ["echo", '{"ok": true}'], "shell_v2": "x"}) == {"ok": True}


async def test_shell_missing_executable_is_terminal() -> None:
    with pytest.raises(TerminalStepError, match="no-such-command-xyz") as info:
        await run("shell", {"argv": ["no-such-command-xyz"]})
    assert info.value.kind == "not_found"


async def test_shell_env_cwd_and_stdin(tmp_path: Path) -> None:
    code = (
        "import json, os, sys\n"
        "keys = ['NATSFLOW_EXECUTION_ID', 'NATSFLOW_STEP', 'NATSFLOW_ATTEMPT',\n"
        "        'NATSFLOW_IDEMPOTENCY_KEY', 'GREETING', 'PATH']\n"
        "env = {k: os.environ.get(k) for k in keys}\n"
        "print(json.dumps({'env': env, 'cwd': os.getcwd(), 'stdin': sys.stdin.read()}))\n"
    )
    params = {"argv": py(code), "env": {"GREETING": "hi"}, "cwd": str(tmp_path), "stdin": "é\n"}
    out = await run("shell", params)
    assert out["env"] == {
        "NATSFLOW_EXECUTION_ID": "ex-1",
        "NATSFLOW_STEP": "fetch",
        "NATSFLOW_ATTEMPT": "2",
        "NATSFLOW_IDEMPOTENCY_KEY": "ex-1:fetch:2",
        "GREETING": "hi",
        "PATH": os.environ.get("PATH"),  # merged over the worker's environment
    }
    assert out["cwd"] == str(tmp_path)
    assert out["stdin"] == "é\n"


async def test_shell_child_that_ignores_stdin_is_fine() -> None:
    out = await run("shell", {"argv": py("print(1)"), "stdin": "x" * (1 << 20)})
    assert out == 1


async def _start_and_cancel(code: str) -> list[int]:
    """Run ``code``, which reports its pids as progress, then cancel the attempt."""
    pids: list[int] = []
    started = anyio.Event()

    async def progress(text: str) -> None:
        pids.extend(int(p) for p in text.split())
        started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "shell", {"argv": py(code)}, make_ctx(progress))
        with anyio.fail_after(10):
            await started.wait()
        tg.cancel_scope.cancel()
    return pids


async def test_shell_cancellation_kills_the_child() -> None:
    code = "import os, time; print('[PROGRESS]', os.getpid(), flush=True); time.sleep(60)"
    (pid,) = await _start_and_cancel(code)
    assert not alive(pid)  # reaped before the cancellation propagated


async def test_shell_cancellation_kills_a_stubborn_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell_module, "_KILL_GRACE", 0.3)
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # inherited by the grandchild
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('[PROGRESS]', os.getpid(), child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    pid, grandchild = await _start_and_cancel(code)
    assert not alive(pid)
    await wait_dead(grandchild)  # reparented, so reaped by init in its own time


# -- http ---------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    requests: list[web.Request]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    requests: list[web.Request] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        requests.append(request)
        path = request.path
        if path == "/json":
            return web.json_response({"ok": True, "method": request.method})
        if path == "/echo":
            return web.json_response({"body": await request.json()}, status=201)
        if path == "/text":
            return web.Response(text="plain", headers={"X-Thing": "1"})
        if path == "/boom":
            return web.Response(status=500, text="database down")
        if path == "/slow-down":
            return web.Response(status=429, headers={"Retry-After": "7"})
        if path == "/later":
            when = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
            return web.Response(status=503, headers={"Retry-After": when})
        return web.Response(status=404, text="no such thing")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"http://127.0.0.1:{port}", requests)
    finally:
        await runner.cleanup()


async def test_http_json_response(server: Server) -> None:
    out = await run("http", {"url": f"{server.url}/json"})
    assert out["status"] == 200
    assert out["body"] == {"ok": True, "method": "GET"}
    assert out["headers"]["Content-Type"].startswith("application/json")
    assert server.requests[0].headers[IDEMPOTENCY_HEADER] == "ex-1:fetch:2"


async def test_http_post_json_and_expect_status(server: Server) -> None:
    params = {"url": f"{server.url}/echo", "json": {"a": [1, 2]}, "expect_status": [201]}
    out = await run("http", params)
    assert server.requests[0].method == "POST"
    assert out["body"] == {"body": {"a": [1, 2]}}


async def test_http_text_response(server: Server) -> None:
    out = await run("http", {"url": f"{server.url}/text", "method": "get"})
    assert out["body"] == "plain"
    assert out["headers"]["X-Thing"] == "1"


@pytest.mark.parametrize("method", ["put", "Patch", "DELETE"])
async def test_http_method_in_any_case_is_sent_upper_case(server: Server, method: str) -> None:
    # A rendered template may give a duration string: parsed as at deploy.
    await run("http", {"url": f"{server.url}/json", "method": method, "timeout": "2s"})
    assert server.requests[0].method == method.upper()


async def test_http_500_is_retryable(server: Server) -> None:
    with pytest.raises(RetryableStepError, match="status 500: database down") as info:
        await run("http", {"url": f"{server.url}/boom"})
    assert info.value.kind == "http_status"
    assert info.value.retry_after is None


async def test_http_404_is_terminal(server: Server) -> None:
    with pytest.raises(TerminalStepError, match="status 404") as info:
        await run("http", {"url": f"{server.url}/missing"})
    assert info.value.kind == "http_status"


async def test_http_unexpected_2xx_is_terminal(server: Server) -> None:
    with pytest.raises(TerminalStepError, match="status 200"):
        await run("http", {"url": f"{server.url}/json", "expect_status": [204]})


async def test_http_429_carries_retry_after(server: Server) -> None:
    with pytest.raises(RetryableStepError) as info:
        await run("http", {"url": f"{server.url}/slow-down"})
    assert info.value.retry_after == 7.0


async def test_http_retry_after_as_a_past_date_is_zero(server: Server) -> None:
    with pytest.raises(RetryableStepError) as info:
        await run("http", {"url": f"{server.url}/later"})
    assert info.value.retry_after == 0.0


async def test_http_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableStepError) as info:
        await run("http", {"url": f"http://127.0.0.1:{port}/"})
    assert info.value.kind == "connection"


async def test_http_json_and_body_together_are_refused() -> None:
    with pytest.raises(TerminalStepError, match="use json or body, not both") as info:
        await run("http", {"url": "http://127.0.0.1:1/", "json": {}, "body": "x"})
    assert info.value.kind == "bad_params"


# -- python -------------------------------------------------------------------------


def python_registry() -> ActionRegistry:
    registry = builtin_registry()

    def add(ctx: ActionContext, args: dict[str, Any]) -> Any:
        # Sync callables run off the event loop thread.
        return {"sum": args["a"] + args["b"], "main": threading.current_thread().name}

    async def greet(ctx: ActionContext, args: dict[str, Any]) -> Any:
        await ctx.report_progress("greeting")
        return f"hello {args.get('name', 'world')} from {ctx.step}"

    def fails(ctx: ActionContext, args: dict[str, Any]) -> Any:
        raise KeyError(args["missing"])

    async def refuses(ctx: ActionContext, args: dict[str, Any]) -> Any:
        raise TerminalStepError("no such customer", kind="customer")

    def returns_a_set(ctx: ActionContext, args: dict[str, Any]) -> Any:
        return {1, 2}

    def returns_an_object(ctx: ActionContext, args: dict[str, Any]) -> Any:
        return object()

    def returns_a_tuple(ctx: ActionContext, args: dict[str, Any]) -> Any:
        return (1, datetime(2024, 1, 2, tzinfo=UTC))

    class AsyncCallable:
        async def __call__(self, ctx: ActionContext, args: dict[str, Any]) -> Any:
            return "called"

    for fn in (add, greet, fails, refuses, returns_a_set, returns_an_object, returns_a_tuple):
        registry.register_python(fn.__name__, fn)
    registry.register_python("instance", AsyncCallable())
    return registry


async def call(function: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    params: dict[str, Any] = {"function": function}
    if args is not None:
        params["args"] = args
    return await python_registry().get("python")(kw.get("ctx") or make_ctx(), params)


async def test_python_sync_callable_runs_in_a_thread() -> None:
    out = await call("add", {"a": 1, "b": 2})
    assert out["sum"] == 3
    assert out["main"] != threading.main_thread().name


async def test_python_async_callable() -> None:
    seen: list[str] = []

    async def progress(text: str) -> None:
        seen.append(text)

    assert await call("greet", ctx=make_ctx(progress)) == "hello world from fetch"
    assert seen == ["greeting"]
    assert await call("instance") == "called"


async def test_python_exception_becomes_retryable_with_its_class_name() -> None:
    with pytest.raises(RetryableStepError, match="fails raised KeyError") as info:
        await call("fails", {})
    assert info.value.kind == "KeyError"


async def test_python_step_error_propagates_as_is() -> None:
    with pytest.raises(TerminalStepError, match="no such customer") as info:
        await call("refuses")
    assert info.value.kind == "customer"


async def test_python_non_serializable_output_is_terminal() -> None:
    with pytest.raises(
        TerminalStepError, match="returns_an_object returned a value of type 'object'"
    ) as info:
        await call("returns_an_object")
    assert info.value.kind == "not_serializable"


async def test_python_output_is_normalized_to_json() -> None:
    assert await call("returns_a_tuple") == [1, "2024-01-02T00:00:00Z"]
    assert sorted(await call("returns_a_set")) == [1, 2]


async def test_python_unknown_function_is_terminal() -> None:
    with pytest.raises(TerminalStepError, match="unknown function 'nope'") as info:
        await call("nope")
    assert info.value.kind == "not_found"
    assert "add" in info.value.message  # lists what is registered


async def test_python_args_must_be_a_mapping() -> None:
    with pytest.raises(StepError) as info:
        await call("add", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert info.value.kind == "bad_params"
