"""Shared machinery of natsflow's benchmarks.

``Stack`` mirrors the topology of the raw reference benchmark
(``../shared/bench/jetstream_ceiling.py``, measurement 4, "subproc worker"):

- a nats-server (``service.embedded.EmbeddedServer``, JetStream, a temporary
  store directory, a free loopback port that is never 4222);
- one ``natsflow serve`` process with the execution actors and the admin API
  only (``NATSFLOW_WORKERS=0``, HTTP off);
- one ``natsflow worker`` process (``NATSFLOW_WORKERS=256``, HTTP off);
- the benchmark itself as the client (start requests, one KV watcher).

CPU seconds of every process are read from ``/proc/<pid>/stat`` (utime + stime),
as the raw benchmark does. Everything started here is stopped on exit,
exception, Ctrl-C or SIGTERM: the async clean-up terminates each process by its
id (SIGKILL after a grace period) and a synchronous last resort in ``run_main``
kills whatever an interrupted clean-up left behind. The natsflow processes also
get ``PR_SET_PDEATHSIG`` so they die with the benchmark even on SIGKILL (the
nats-server, started by ``EmbeddedServer``, does not: after a SIGKILL of the
benchmark stop it by the pid in ``ps``; its store is under /tmp/natsflow-bench-*).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import nats
import orjson
from nats.aio.client import Client
from nats.js.kv import KeyValue

import natsflow
from natsflow.actors.jetstream.topology import (
    EXECUTIONS_BUCKET,
    TASKS_STREAM,
    WORKERS_CONSUMER,
    app_steps_consumer,
)
from natsflow.service.embedded import EmbeddedServer, free_port

REPO = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
RAW_BENCH = REPO.parent / "shared" / "bench" / "jetstream_ceiling.py"

T = TypeVar("T")

# Launch ``natsflow`` from the running interpreter. Without --uvloop the child is
# kept on the default asyncio loop (the CLI picks uvloop whenever it is importable),
# so that it matches the raw benchmark's "asyncio" suite.
_LAUNCH_UVLOOP = "from natsflow.service.cli import main; main()"
_LAUNCH_ASYNCIO = (
    "import sys; sys.modules['uvloop'] = None; from natsflow.service.cli import main; main()"
)

# ---------------------------------------------------------------------------
# processes: CPU accounting and last-resort clean-up
# ---------------------------------------------------------------------------

_OWNED_PIDS: set[int] = set()
"""Every process this benchmark started and has not yet seen exit (pid)."""


def proc_cpu(pid: int | None) -> float:
    """utime + stime of a process in seconds (0.0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0.0


def sys_busy() -> float:
    """Machine-wide busy CPU seconds (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK


def _parent_death_signal() -> None:
    """In the child before exec: SIGTERM when the benchmark process dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _is_our_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return parts[0] != "Z" and int(parts[1]) == os.getpid()


def kill_leftovers(grace: float = 5.0) -> None:
    """Synchronous last resort: stop every process we started that still runs."""
    pids = [pid for pid in _OWNED_PIDS if _is_our_child(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _is_our_child(pid)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in list(_OWNED_PIDS):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    _OWNED_PIDS.clear()


class Child:
    """A subprocess we own: output to a log file, stopped by pid (TERM, then KILL)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it ourselves
                preexec_fn=_parent_death_signal,
            )
        _OWNED_PIDS.add(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.proc.poll() is None else 0.0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with code {code}; log {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    async def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Idempotent."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            deadline = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # a Popen has no awaitable exit
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        _OWNED_PIDS.discard(proc.pid)
        return proc.returncode


# ---------------------------------------------------------------------------
# the stack: nats-server + natsflow serve + natsflow worker
# ---------------------------------------------------------------------------


def bench_server(directory: Path, *, fsync: bool, extra_args: Sequence[str] = ()) -> EmbeddedServer:
    """A nats-server with its store, log and config in ``directory``, on a free port
    (never 4222); ``fsync``: a config with ``sync_interval: always``."""
    port = free_port()
    while port == 4222:
        port = free_port()
    config = None
    if fsync:
        config = str(directory / "nats.conf")
        Path(config).write_text("jetstream {\n  sync_interval: always\n}\n")
    return EmbeddedServer(
        config_file=config,
        port=port,
        store_dir=str(directory / "jetstream"),
        log_file=str(directory / "nats-server.log"),
        extra_args=extra_args,
    )


def natsflow_argv(command: str, *, uvloop: bool) -> list[str]:
    """``natsflow COMMAND`` run by this interpreter, on uvloop or plain asyncio."""
    return [sys.executable, "-c", _LAUNCH_UVLOOP if uvloop else _LAUNCH_ASYNCIO, command]


@dataclass
class StackOptions:
    workers: int = 256
    uvloop: bool = False
    log_level: str = "INFO"
    env: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    ready_timeout: float = 30.0
    fsync: bool = False
    """nats-server with ``sync_interval: always``: every acknowledged write on disk."""
    app: str | None = None
    """A code app's module: the worker is ``natsflow worker --app APP`` (its process
    decides its executions and runs its steps; serve only answers the admin API)."""


class Stack:
    """``async with Stack(options) as stack``: the processes of one benchmark run."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.dir = Path(tempfile.mkdtemp(prefix="natsflow-bench-", dir="/tmp"))
        self.monitor_port = free_port()
        self.server = bench_server(
            self.dir,
            fsync=options.fsync,
            extra_args=["-m", str(self.monitor_port)],  # /varz, /connz: message counts
        )
        self.serve: Child | None = None
        self.worker: Child | None = None
        self.nc: Client | None = None
        self.final_logs: dict[str, str] = {}  # each child's whole log, once it stopped

    @property
    def url(self) -> str:
        return self.server.url

    def _env(self, workers: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NATSFLOW_")}
        env.update(
            {
                "NATS_URL": self.url,
                "NATSFLOW_WORKERS": str(workers),
                "NATSFLOW_HTTP_PORT": "0",
                "NATSFLOW_DATA_DIR": str(self.dir / "data"),
                "NATSFLOW_LOG_LEVEL": self.options.log_level,
                # natsflow's durability setting matches the server's sync mode, as an
                # operator would set it (relaxed turns group commit off).
                "NATSFLOW_DURABILITY": "fsync" if self.options.fsync else "relaxed",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.options.env)
        return env

    def _argv(self, command: str) -> list[str]:
        return natsflow_argv(command, uvloop=self.options.uvloop)

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        await self.server.start()
        if self.server.pid is not None:
            _OWNED_PIDS.add(self.server.pid)
        self.nc = await nats.connect(self.url, name="natsflow-bench", max_reconnect_attempts=0)
        self.serve = Child(
            "natsflow serve", self._argv("serve"), self._env(0), self.dir / "serve.log"
        )
        await self._wait_serve_ready(self.serve)
        if self.options.app is not None:
            self.worker = Child(
                "natsflow worker --app",
                [*self._argv("worker"), "--app", self.options.app],
                self._env(self.options.workers),
                self.dir / "worker.log",
            )
            await self._wait_app_ready(self.worker)
            return
        self.worker = Child(
            "natsflow worker",
            self._argv("worker"),
            self._env(self.options.workers),
            self.dir / "worker.log",
        )
        await self._wait_worker_ready(self.worker)

    async def _wait_until(
        self, child: Child, what: str, check: Callable[[], Awaitable[bool]]
    ) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        while True:
            child.check_alive()
            if await check():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{child.name}: {what} not seen after {self.options.ready_timeout}s; "
                    f"log {child.log_path}:\n{child.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def _wait_serve_ready(self, child: Child) -> None:
        assert self.nc is not None
        nc = self.nc

        async def ready() -> bool:
            if "natsflow ready" not in child.log_text():
                return False
            try:
                await nc.request("$SRV.PING.natsflow", b"", timeout=0.5)
            except Exception:
                return False
            return True

        await self._wait_until(child, "'natsflow ready' and a $SRV.PING.natsflow reply", ready)

    async def _wait_worker_ready(self, child: Child) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=2)

        async def ready() -> bool:
            if "natsflow ready" not in child.log_text():
                return False
            try:
                info = await js.consumer_info(TASKS_STREAM, WORKERS_CONSUMER)
            except Exception:
                return False
            return (info.num_waiting or 0) > 0

        await self._wait_until(child, "a waiting pull request on natsflow-workers", ready)

    async def _wait_app_ready(self, child: Child) -> None:
        assert self.nc is not None
        assert self.options.app is not None
        js = self.nc.jetstream(timeout=2)
        consumer = app_steps_consumer(importlib.import_module(self.options.app).NATSFLOW_APP)

        async def ready() -> bool:
            if "natsflow worker ready" not in child.log_text():
                return False
            try:
                info = await js.consumer_info(TASKS_STREAM, consumer)
            except Exception:
                return False
            return (info.num_waiting or 0) > 0

        await self._wait_until(child, f"a waiting pull request on {consumer}", ready)

    async def _stop(self) -> None:
        # Shielded: clean-up must finish even though the main task was cancelled.
        await asyncio.shield(self._stop_all())

    async def _stop_all(self) -> None:
        for child in (self.worker, self.serve):
            if child is not None:
                try:
                    code = await child.stop()
                except BaseException as exc:  # keep stopping the rest
                    print(f"stopping {child.name}: {exc!r}", file=sys.stderr)
                    continue
                self.final_logs[child.name] = child.log_text()
                if code not in (0, -signal.SIGTERM, None):
                    print(
                        f"{child.name} exited with code {code}; log tail:\n{child.log_tail(1500)}",
                        file=sys.stderr,
                    )
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5)
        pid = self.server.pid
        with contextlib.suppress(Exception):
            await self.server.stop()
        if pid is not None:
            _OWNED_PIDS.discard(pid)
        if self.options.keep:
            print(f"kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> dict[str, int | None]:
        return {
            "srv": self.server.pid,
            "serve": self.serve.pid if self.serve else None,
            "worker": self.worker.pid if self.worker else None,
        }

    def check_alive(self) -> None:
        for child in (self.serve, self.worker):
            if child is not None:
                child.check_alive()

    def meter(self) -> Meter:
        return Meter(self.pids())

    def _monitor(self, path: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.monitor_port}/{path}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            body: dict[str, Any] = orjson.loads(reply.read())
        return body

    async def message_counts(self) -> dict[str, float]:
        """Messages into and out of nats-server, in all and per connection.

        Connections are told apart by their order: this client connects first, then
        ``natsflow serve``, then ``natsflow worker`` (one connection each); any
        further connection counts as ``other``.
        """
        varz, connz = await asyncio.gather(
            asyncio.to_thread(self._monitor, "varz"),
            asyncio.to_thread(self._monitor, "connz?sort=cid&limit=1000"),
        )
        out: dict[str, float] = {
            "srv_in_msgs": float(varz["in_msgs"]),
            "srv_out_msgs": float(varz["out_msgs"]),
        }
        names = ("client", "serve", "worker")
        for index, conn in enumerate(connz.get("connections") or []):
            name = names[index] if index < len(names) else "other"
            for key in ("in_msgs", "out_msgs"):  # as the server sees it: in = client sent
                field = f"{name}_{'sent' if key == 'in_msgs' else 'received'}_msgs"
                out[field] = out.get(field, 0.0) + float(conn.get(key, 0))
        return out


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------

OTHER_LIMIT_PCT = 15.0
"""CPU% (of one core) used by other processes below which the machine counts as quiet."""


async def quiet_gate(max_wait: float = 5.0) -> float:
    """Wait (at most ``max_wait`` s) until the rest of the machine is nearly idle."""
    t0 = time.perf_counter()
    while True:
        b0, w0 = sys_busy(), time.perf_counter()
        await asyncio.sleep(0.3)
        busy = 100 * (sys_busy() - b0) / (time.perf_counter() - w0)
        if busy < OTHER_LIMIT_PCT or time.perf_counter() - t0 >= max_wait:
            return time.perf_counter() - t0
        await asyncio.sleep(0.5)


class Meter:
    """Wall time and CPU of each process (``<name>_cpu_s``, ``<name>_cpu_pct``), the
    benchmark client (``client``), and what the rest of the machine used (``other``)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.cpu0: dict[str, float] = {}
        self.client0 = 0.0
        self.busy0 = 0.0

    def start(self) -> Meter:
        self.cpu0 = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        self.client0 = time.process_time()
        self.busy0 = sys_busy()
        self.t0 = time.perf_counter()
        return self

    def stop(self, t_end: float | None = None) -> dict[str, float]:
        now = time.perf_counter()
        wall = (t_end if t_end is not None else now) - self.t0
        span = now - self.t0  # CPU is read now: use the full span for the percentages
        out: dict[str, float] = {"wall_s": wall}
        ours = 0.0
        for name, pid in self.pids.items():
            used = proc_cpu(pid) - self.cpu0[name]
            out[f"{name}_cpu_s"] = used
            out[f"{name}_cpu_pct"] = 100 * used / span
            ours += used
        client = time.process_time() - self.client0
        out["client_cpu_s"] = client
        out["client_cpu_pct"] = 100 * client / span
        ours += client
        out["other_cpu_pct"] = max(0.0, 100 * (sys_busy() - self.busy0 - ours) / span)
        return out


def pct(sorted_vals: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, round(q * (len(sorted_vals) - 1)))]


def rnd(x: float) -> float:
    if x != x:
        return x
    if abs(x) >= 100:
        return float(round(x))
    return round(x, 3)


def med_min_max(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For every numeric key of the runs: median, min and max."""
    rows = list(runs)

    def numeric(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    keys = sorted({k for r in rows for k, v in r.items() if numeric(v)})
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if numeric(r.get(k))]
        out[k] = {
            "med": rnd(statistics.median(vals)),
            "min": rnd(min(vals)),
            "max": rnd(max(vals)),
        }
    return out


def emit(record: dict[str, Any]) -> None:
    """One JSON line per measurement (compare.py parses lines starting with '{')."""
    print(json.dumps(record), flush=True)


def env_record(options: StackOptions) -> dict[str, Any]:
    import importlib.metadata as md

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0],
        "loop": "uvloop" if options.uvloop else "asyncio",
        "nats_py": version("nats-py"),
        "uvloop": version("uvloop"),
        "cpus": os.cpu_count(),
        "workers": options.workers,
        "env": options.env,
    }


# ---------------------------------------------------------------------------
# the client side: deploy, start, watch
# ---------------------------------------------------------------------------


def chain_manifest(name: str, steps: int) -> str:
    """A sequential workflow of ``steps`` noop steps: s0 -> s1 -> ... (``needs``)."""
    body: dict[str, Any] = {
        "name": name,
        "description": f"benchmark: {steps} sequential noop steps",
        "steps": {
            f"s{i}": {"action": "noop", **({"needs": [f"s{i - 1}"]} if i else {})}
            for i in range(steps)
        },
    }
    return orjson.dumps(body).decode()


async def deploy(nc: Client, manifest_json: str) -> natsflow.Deployed:
    return await natsflow.Client(nc, request_timeout=30).deploy(manifest_json, "json", "bench")


async def start(nc: Client, workflow: str, input: Any = None, within: float = 60) -> str:
    started = await natsflow.Client(nc, request_timeout=within).start(workflow, input)
    return started.execution_id


@dataclass
class Finished:
    status: str
    seen: float
    """perf_counter() when the client saw the terminal status."""
    started_at: float | None
    finished_at: float | None


class StatusWatcher:
    """One KV watcher over every key of ``natsflow_executions``, opened once.

    Records, for each execution, when the client first saw a terminal status, so
    that a completion arriving before the start reply is not missed.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._watcher: Any = None
        self._task: asyncio.Task[None] | None = None
        self.finished: dict[str, Finished] = {}
        self._waiters: dict[str, asyncio.Future[Finished]] = {}
        self.updates = 0

    @classmethod
    async def open(cls, nc: Client) -> StatusWatcher:
        kv = await nc.jetstream(timeout=10).key_value(EXECUTIONS_BUCKET)
        self = cls(kv)
        self._watcher = await kv.watch(">")
        # The initial replay ends with a None marker: only then is the watch live.
        while True:
            entry = await self._watcher.updates(timeout=30)
            if entry is None:
                break
            self._record(entry.key, entry.value)
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        async for entry in self._watcher:
            if entry is not None:
                self._record(entry.key, entry.value)

    def _record(self, key: str, value: bytes | None) -> None:
        self.updates += 1
        if not value or key in self.finished:
            return
        summary = orjson.loads(value)
        status = summary.get("status")
        if status not in TERMINAL:
            return
        done = Finished(
            status, time.perf_counter(), summary.get("started_at"), summary.get("finished_at")
        )
        self.finished[key] = done
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(done)

    async def wait(self, execution: str, within: float = 60) -> Finished:
        done = self.finished.get(execution)
        if done is not None:
            return done
        waiter = self._waiters.get(execution)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[execution] = waiter
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), within)
        except TimeoutError:
            raise TimeoutError(f"execution {execution} not finished after {within}s") from None

    async def wait_all(
        self,
        executions: Sequence[str],
        within: float,
        alive: Callable[[], None] | None = None,
    ) -> list[Finished]:
        """Wait for all; ``alive`` is called every second (raise there to give up early)."""
        deadline = time.monotonic() + within
        out: list[Finished] = []
        for execution in executions:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sum(1 for e in executions if e not in self.finished)
                    raise TimeoutError(
                        f"{missing} of {len(executions)} executions not finished after {within}s"
                    )
                try:
                    out.append(await self.wait(execution, min(1.0, remaining)))
                    break
                except TimeoutError:
                    if alive is not None:
                        alive()
        return out

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()


# ---------------------------------------------------------------------------
# py-spy: profile a process while a run goes on
# ---------------------------------------------------------------------------


class Attached:
    """A tool attached to one of our processes until ``stop()`` (SIGINT makes it report)."""

    def __init__(self, argv: Sequence[str], out: Path) -> None:
        self.out = out
        self.log = out.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal,
            )
        _OWNED_PIDS.add(self.proc.pid)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            while self.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # a Popen has no awaitable exit
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        _OWNED_PIDS.discard(self.proc.pid)


def _tool(name: str, hint: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not os.path.exists(exe):
        raise RuntimeError(f"{name} not found: {hint}")
    return exe


class PySpy(Attached):
    """``py-spy record -f raw`` (collapsed stacks). Note: py-spy counts a thread that is
    runnable but not running (e.g. preempted inside a socket write that woke another
    process) as active, so syscall-heavy frames look bigger than their CPU share."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        exe = _tool("py-spy", ".venv/bin/pip install py-spy")
        argv = [exe, *f"record -p {pid} -f raw -r {rate} --nonblocking -o".split(), str(out)]
        super().__init__(argv, out)


class Strace(Attached):
    """``strace -c -f``: system call counts of one process (slows it; counts stay valid)."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = _tool("strace", "apt-get install strace")
        super().__init__([exe, "-c", "-f", "-p", str(pid), "-o", str(out)], out)


class Perf(Attached):
    """``perf record -e cpu-clock``: on-CPU samples only (a preempted thread is not
    sampled), so it shows where CPU goes: interpreter, kernel, C extensions."""

    def __init__(self, pid: int, out: Path, freq: int = 999) -> None:
        exe = _tool("perf", "apt-get install linux-perf")
        argv = [exe, *f"record -e cpu-clock -F {freq} -g -p {pid} -o".split(), str(out)]
        super().__init__(argv, out)


def summarize_perf(path: Path, top: int = 20) -> str:
    """Share of on-CPU samples per shared object and the hottest native symbols."""
    exe = shutil.which("perf") or "perf"
    out = []
    for sort, limit in (("dso", 8), ("dso,sym", top)):
        proc = subprocess.run(
            [
                exe,
                "report",
                "-i",
                str(path),
                "--stdio",
                "--no-children",
                "--sort",
                sort,
                "-g",
                "none",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        rows = [
            line.rstrip()
            for line in proc.stdout.splitlines()
            if line.strip() and not line.lstrip().startswith("#") and "%" in line
        ]
        out.append(f"  by {sort}:")
        out += [f"  {row.strip()}" for row in rows[:limit]]
    return "\n".join(out)


def summarize_strace(path: Path, per: int, top: int = 8) -> str:
    """The busiest system calls from ``strace -c`` output, with calls per ``per`` units."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return f"(no strace output: {exc})"
    rows: list[tuple[int, str]] = []
    for line in lines:
        parts = line.split()
        numeric = len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[3].isdigit()
        if numeric and parts[-1] != "total":
            rows.append((int(parts[3]), parts[-1]))
    rows.sort(reverse=True)
    total = sum(n for n, _ in rows)
    out = [f"  {'calls':>8} {'per step':>9}  syscall"]
    out += [f"  {n:>8} {n / per:>9.2f}  {name}" for n, name in rows[:top]]
    out.append(f"  {total:>8} {total / per:>9.2f}  (all)")
    return "\n".join(out)


SYSCALL_LEAVES = ("_SelectorSocketTransport.write", "EpollSelector.select", "select (")
"""Leaf frames that sit in a system call: py-spy counts them while the thread is runnable
but preempted (a socket write waking nats-server), which perf shows is not CPU."""


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Top functions by self and inclusive samples from a collapsed-stack file, without
    the samples whose leaf is a system call (see SYSCALL_LEAVES)."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = dropped = 0
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        return f"(no profile: {exc})"
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames[-1].startswith(SYSCALL_LEAVES):
            dropped += count
            continue
        total += count
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
    if not total:
        return "(no samples)"
    out = [
        f"{total} samples in Python ({dropped} more with a syscall leaf left out: "
        f"{100 * dropped / (total + dropped):.0f}% of all)",
        "  self%  function",
    ]
    out += [
        f"  {100 * n / total:5.1f}  {frame}"
        for frame, n in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]
    ]
    out.append("  incl%  function")
    out += [
        f"  {100 * n / total:5.1f}  {frame}"
        for frame, n in sorted(incl_counts.items(), key=lambda kv: -kv[1])[: top * 2]
    ]
    return "\n".join(out)


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: aggregate over lines."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{name} ({short})"


# ---------------------------------------------------------------------------
# command line and the event loop
# ---------------------------------------------------------------------------


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run natsflow processes and this client on uvloop (default: plain asyncio, "
        "like the raw benchmark's 'asyncio' suite)",
    )
    parser.add_argument("--workers", type=int, default=256, help="NATSFLOW_WORKERS of the worker")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the natsflow processes (e.g. NATSFLOW_SNAPSHOT_EVERY=1000)",
    )
    parser.add_argument("--log-level", default="INFO", help="NATSFLOW_LOG_LEVEL of the processes")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="nats-server with sync_interval: always (fsync per write; default: lazy)",
    )
    parser.add_argument(
        "--gate-wait",
        type=float,
        default=5.0,
        help="max seconds to wait for an idle machine before each repetition",
    )


def stack_options(args: argparse.Namespace) -> StackOptions:
    env: dict[str, str] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env: expected KEY=VALUE, got {item!r}")
        env[key] = value
    return StackOptions(
        workers=args.workers,
        uvloop=args.uvloop,
        log_level=args.log_level,
        env=env,
        keep=args.keep,
        fsync=args.fsync,
    )


def run_main(main: Callable[[], Coroutine[Any, Any, T]], uvloop: bool) -> T:
    """Run ``main()`` on asyncio or uvloop; SIGTERM and Ctrl-C cancel it (its clean-up
    runs), and whatever a second interrupt left running is killed before returning."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # POSIX, like natsflow
        return await main()

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop:
        import uvloop as uv

        factory = uv.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(guarded())
    except asyncio.CancelledError:
        print("cancelled (SIGTERM)", file=sys.stderr)
        raise SystemExit(143) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        kill_leftovers()
