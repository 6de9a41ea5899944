"""The ``shell`` action: run a command (never through a shell) with live progress."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from natsflow.actors.actions._context import ActionContext, convert_params
from natsflow.events.errors import RetryableStepError, TerminalStepError
from natsflow.manifests.actions import SHELL

PROGRESS_PREFIX = "[PROGRESS]"

# How long a cancelled command gets between SIGTERM and SIGKILL.
_KILL_GRACE = 2.0
# After SIGKILL the kernel ends the process at once; this only bounds a stuck reap.
_REAP_TIMEOUT = 5.0
# stdout kept for a JSON output; past it the output can only be text, so keep a tail.
_JSON_LIMIT = 1 << 20
_TEXT_LIMIT = 64 << 10
# A "line" longer than this without a newline is collected as is, not buffered on.
_LINE_LIMIT = 64 << 10
_STDERR_LIMIT = 4 << 10


class _Stdout:
    """Collected (non-progress) stdout, bounded: whole up to `_JSON_LIMIT`, then a tail."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        # Once cut, trim in bulk (at twice the tail size) so a chatty command is not
        # quadratic.
        limit = 2 * _TEXT_LIMIT if self.truncated else _JSON_LIMIT
        if len(self.data) > limit:
            del self.data[:-_TEXT_LIMIT]
            self.truncated = True

    def output(self) -> Any:
        text = self.data.decode(errors="replace")
        if not self.truncated:
            try:
                return msgspec.json.decode(text.strip())
            except msgspec.DecodeError:
                pass
        if len(text) > _TEXT_LIMIT or self.truncated:
            return {"stdout": text[-_TEXT_LIMIT:], "truncated": True}
        return {"stdout": text}


async def shell(ctx: ActionContext, params: dict[str, Any]) -> Any:
    """Run ``argv`` as a child process; JSON stdout is the output.

    Params (`ShellParams`): ``argv`` (non-empty list of str, run without a shell),
    ``env`` (merged over the worker's environment), ``cwd``, ``stdin`` (text fed to
    the child).
    Stdout lines starting with ``[PROGRESS]`` are reported as progress, the rest is
    collected: if it parses as JSON that is the output, else ``{"stdout": text}``
    (the last 64 KiB, with ``"truncated": true`` when cut). A non-zero exit is a
    `RetryableStepError` (kind ``exit_code``) carrying the tail of stderr.

    On cancellation (the runtime's per-attempt timeout, a drain, or the execution's
    cancel) the child's whole process group gets SIGTERM, then SIGKILL after a grace
    period (``ctx.kill_grace``), and is reaped before the cancellation propagates.
    """
    p = convert_params(SHELL, params)
    env = _child_env(ctx, p.env)
    try:
        process = await anyio.open_process(
            p.argv,
            stdin=subprocess.PIPE if p.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=p.cwd,
            env=env,
            # Its own process group, so that a timeout also stops the grandchildren
            # a script starts (which would otherwise hold our pipes open).
            start_new_session=True,
        )
    except OSError as e:
        raise TerminalStepError(
            f"shell: cannot start {p.argv[0]!r} (cwd {p.cwd!r}): {e.strerror or e}",
            kind="not_found" if isinstance(e, FileNotFoundError) else "os_error",
        ) from e

    stdout = _Stdout()
    stderr = bytearray()
    finished = False
    try:
        async with anyio.create_task_group() as tg:
            if p.stdin is not None:
                assert process.stdin is not None
                tg.start_soon(_feed, process.stdin, p.stdin.encode())
            assert process.stdout is not None
            assert process.stderr is not None
            tg.start_soon(_read_stdout, process.stdout, ctx, stdout)
            tg.start_soon(_read_tail, process.stderr, stderr)
            returncode = await process.wait()
        finished = True
    finally:
        with anyio.CancelScope(shield=True):
            if not finished:
                grace = _KILL_GRACE if ctx.kill_grace is None else ctx.kill_grace
                await _kill_group(process, grace)
            with anyio.move_on_after(_REAP_TIMEOUT):
                await process.aclose()

    if returncode != 0:
        raise RetryableStepError(
            f"shell: {p.argv[0]!r} exit code {returncode}{_signal_name(returncode)}: "
            f"{stderr.decode(errors='replace').strip()}",
            kind="exit_code",
        )
    return stdout.output()


def _child_env(ctx: ActionContext, extra: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    # Set last: the step's identity comes from the runtime, a manifest cannot spoof it.
    env["NATSFLOW_EXECUTION_ID"] = ctx.execution_id
    env["NATSFLOW_STEP"] = ctx.step
    env["NATSFLOW_ATTEMPT"] = str(ctx.attempt)
    env["NATSFLOW_IDEMPOTENCY_KEY"] = ctx.idempotency_key
    return env


async def _feed(stream: ByteSendStream, data: bytes) -> None:
    try:
        async with stream:
            await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError):
        pass  # the child exited or closed stdin without reading it all: its choice


async def _read_stdout(stream: ByteReceiveStream, ctx: ActionContext, out: _Stdout) -> None:
    pending = bytearray()
    async for chunk in stream:
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[: end + 1])
            del pending[: end + 1]
            await _line(line, ctx, out)
        if len(pending) > _LINE_LIMIT:
            out.add(bytes(pending))
            pending.clear()
    if pending:
        await _line(bytes(pending), ctx, out)


async def _line(line: bytes, ctx: ActionContext, out: _Stdout) -> None:
    if line.startswith(PROGRESS_PREFIX.encode()):
        text = line[len(PROGRESS_PREFIX) :].decode(errors="replace").strip()
        await ctx.report_progress(text)
    else:
        out.add(line)


async def _read_tail(stream: ByteReceiveStream, tail: bytearray) -> None:
    async for chunk in stream:
        tail += chunk
        del tail[:-_STDERR_LIMIT]


async def _kill_group(process: Process, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after the grace period; reap.

    Only for an interrupted run (cancelled, or progress reporting failed): after a
    normal exit the group is left alone, as `subprocess.run` would.
    """
    pgid = process.pid  # start_new_session: the child leads its own group
    _signal_group(pgid, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await process.wait()
        # Grandchildren may still be stopping. Nothing signals a process group's
        # end, hence the poll; orphans that the host never reaps stay visible as
        # zombies, which is why it is bounded too.
        while _group_alive(pgid):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    with anyio.move_on_after(_REAP_TIMEOUT):
        await process.wait()


def _signal_name(returncode: int) -> str:
    if returncode >= 0:
        return ""
    try:
        return f" (killed by {signal.Signals(-returncode).name})"
    except ValueError:
        return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)
