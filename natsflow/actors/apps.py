"""Where a code app runs: its executions' actors and its steps' workers, in its own process.

``Worker(nats_url, app)`` (embedded: ``async with``; or ``natsflow worker --app
module``) deploys the app's workflows as definitions of kind code, then runs an
``Executor`` on the app's inbox consumer (``natsflow-app-<app>``: every execution
``<app>==...``; several processes of one app share it, and compare-and-set appends
keep one decider per execution) with ``CodeDecider`` s, and a ``WorkerPool`` on the
app's steps consumer running the ``@step`` functions as the custom actions
``<app>.<step>``: retries, timeouts, heartbeats, cancel and idempotency keys are
the engine's own.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import anyio
import nats
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.actions import ActionContext, ActionRegistry
from natsflow.actors.execution import Executor
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import (
    app_consumer,
    app_steps_consumer,
    provision,
    provision_app,
    task_subject,
)
from natsflow.actors.metrics import Metrics
from natsflow.actors.worker import WorkerPool
from natsflow.code.api import StepDef
from natsflow.code.definition import CodeApp, deployable, load_app, step_action
from natsflow.code.replay import CodeDecider
from natsflow.code.step_context import StepContext, running_step
from natsflow.code.values import NotStorable, storable, typed
from natsflow.events.decider import Decider
from natsflow.events.errors import NotFound, TerminalStepError

log = logging.getLogger(__name__)


class CodeDeciders:
    """The ``DeciderSource`` of an app's process: the app's code, whatever the pinned
    version (its history is replayed against the code; a mismatch parks it)."""

    def __init__(self, app: CodeApp) -> None:
        self._app = app
        self._deciders: dict[str, CodeDecider] = {}

    async def get(self, workflow: str, version: str) -> Decider:
        decider = self._deciders.get(workflow)
        if decider is None:
            definition = self._app.workflows.get(workflow)
            if definition is None:
                raise NotFound(f"app {self._app.name} has no workflow {workflow!r}")
            decider = self._deciders[workflow] = CodeDecider(self._app, definition)
        return decider

    def forget(self, execution: str) -> None:
        """Drop the kept coroutine of ``execution``: a passivated execution holds no memory
        here either (its next message replays it from the snapshot and tail)."""
        for decider in self._deciders.values():
            decider.forget(execution)

    def kept(self) -> int:
        """Suspended coroutines kept in memory now (sticky executions)."""
        return sum(d.kept() for d in self._deciders.values())

    def replays(self) -> int:
        """Fresh replays so far (sticky coroutines make them rare)."""
        return sum(d.replays for d in self._deciders.values())


def workflow_of(execution: str) -> str:
    """The workflow name in a code execution id (best effort, for error messages)."""
    rest = execution.partition("==")[2] or execution
    if "=" in rest:
        return rest.split("=")[-2]
    return rest.rsplit("-", 1)[0]


def step_registry(app: CodeApp) -> ActionRegistry:
    """The app's steps as actions: arguments converted to their annotated types, the
    result checked storable (else a terminal failure at the workflow's call site)."""
    registry = ActionRegistry()
    for action, definition in app.by_action().items():
        registry.register(action, _step_action(definition))
    return registry


def _step_action(definition: StepDef[..., Any]) -> Any:
    async def run(ctx: ActionContext, params: dict[str, Any]) -> Any:
        hints = definition.hints()
        names = list(definition.signature.parameters)
        args = [
            typed(value, hints.get(names[i], Any) if i < len(names) else Any, "argument")
            for i, value in enumerate(params.get("args", []))
        ]
        kwargs = {k: typed(v, hints.get(k, Any), k) for k, v in params.get("kwargs", {}).items()}
        # ``step_context()`` inside the function; anyio copies the context into the thread
        with running_step(_step_context(ctx)):
            if definition.is_async:
                result = await definition.fn(*args, **kwargs)
            else:
                result = await anyio.to_thread.run_sync(lambda: definition.fn(*args, **kwargs))
        what = f"step {definition.name} of workflow {workflow_of(ctx.execution_id)} returned"
        try:
            return storable(result, what)
        except NotStorable as exc:
            raise TerminalStepError(str(exc), kind="not_storable") from None

    return run


def _step_context(ctx: ActionContext) -> StepContext:
    return StepContext(
        execution_id=ctx.execution_id,
        step=ctx.step,
        attempt=ctx.attempt,
        idempotency_key=ctx.idempotency_key,
        report_progress=ctx.report_progress,
    )


class Worker:
    """Run a code app against a natsflow deployment's NATS, in this process.

    ``app``: a ``CodeApp``, or modules (or their names) holding ``@workflow`` and
    ``@step`` functions. ``async with Worker(url, app=...)`` deploys and serves until
    the block ends (then drains: steps in flight get ``drain_grace`` seconds).
    """

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        app: CodeApp | ModuleType | str | list[ModuleType | str],
        name: str | None = None,
        concurrency: int = 16,
        ack_wait: float = 30.0,
        idle_timeout: float = 30.0,
        snapshot_every: int = 100,
        drain_grace: float = 10.0,
        parked_retry: float | None = None,
        nc: Client | None = None,
    ) -> None:
        if isinstance(app, CodeApp):
            self.app = app
        else:
            self.app = load_app(app if isinstance(app, list) else [app], name)
        self._url = nats_url
        self._nc = nc
        self._own_nc = nc is None
        self._concurrency = concurrency
        self._ack_wait = ack_wait
        self._idle_timeout = idle_timeout
        self._snapshot_every = snapshot_every
        self._drain_grace = drain_grace
        self._parked_retry = parked_retry  # how often a parked execution tries again
        self.metrics = Metrics()
        self.deciders = CodeDeciders(self.app)
        self.versions: dict[str, str] = {}
        self._tg: TaskGroup | None = None
        self._executor: Executor | None = None
        self._pool: WorkerPool | None = None

    async def __aenter__(self) -> Worker:
        if self._nc is None:
            self._nc = await nats.connect(self._url)
        nc = self._nc
        js = nc.jetstream()
        await self._setup(js)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        publisher = Publisher(nc)
        self._executor = Executor(
            nc,
            js,
            self.deciders,
            self.metrics,
            idle_timeout=self._idle_timeout,
            snapshot_every=self._snapshot_every,
            publisher=publisher,
            ack_wait=self._ack_wait,
            consumer=app_consumer(self.app.name),
        )
        if self._parked_retry is not None:
            self._executor.parked_retry = self._parked_retry
        await self._tg.start(self._executor.run)
        if self.app.steps:
            self._pool = WorkerPool(
                nc,
                js,
                step_registry(self.app),
                self.metrics,
                concurrency=self._concurrency,
                ack_wait=self._ack_wait,
                publisher=Publisher(nc),
                store=EventStore(nc, js, publisher),
                consumer=app_steps_consumer(self.app.name),
            )
            await self._tg.start(self._pool.run)
        log.info("app %s serving %s", self.app.name, ", ".join(sorted(self.app.workflows)))
        return self

    async def _setup(self, js: JetStreamContext) -> None:
        subjects = [task_subject(step_action(self.app.name, s)) for s in sorted(self.app.steps)]
        try:  # natsflow provisioned already (by the service): only the app's consumers,
            # so that an app process needs no right to natsflow's streams (role ``app``)
            await provision_app(js, self.app.name, subjects, ack_wait=self._ack_wait)
        except NotFound:
            await provision(js, ack_wait=self._ack_wait)
            await provision_app(js, self.app.name, subjects, ack_wait=self._ack_wait)
        definitions = Definitions(js)
        for definition in self.app.workflows.values():
            version, _ = await definitions.deploy(deployable(self.app, definition))
            self.versions[definition.name] = version

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        try:
            with anyio.CancelScope(shield=True):
                if self._executor is not None:
                    await self._executor.drain(self._drain_grace)
                if self._pool is not None:
                    await self._pool.drain(self._drain_grace)
            self._tg.cancel_scope.cancel()
        finally:
            await self._tg.__aexit__(None, None, None)
            log.info(
                "app %s stopped: %d fresh replays (sticky coroutines spare the rest)",
                self.app.name,
                self.deciders.replays(),
            )
            if self._own_nc and self._nc is not None:
                await self._nc.drain()

    async def run(self) -> None:
        """Serve until cancelled (``natsflow worker --app``)."""
        async with self:
            await anyio.sleep_forever()
