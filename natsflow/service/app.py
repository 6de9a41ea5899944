"""The natsflow process: embedded or external NATS, provisioning, actors, workers, HTTP."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.actions import ActionRegistry, builtin_registry
from natsflow.actors.deciders import Deciders
from natsflow.actors.execution import Executor
from natsflow.actors.index import INDEX_FILE, ExecutionIndex
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.deliveries import Held, Pending, pending_deliveries, release
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.presence import (
    Instance,
    answer_presence,
    others_running,
    this_instance,
)
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.retention import read_summary_or_tombstone
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.summaries import SummaryFeed
from natsflow.actors.jetstream.topology import (
    ACTORS_CONSUMER,
    INBOX_STREAM,
    TASKS_STREAM,
    WORKERS_CONSUMER,
    find_missing,
    provision,
    stream_replicas,
)
from natsflow.actors.metrics import Metrics
from natsflow.actors.queue_gauges import QueueGauges
from natsflow.actors.retention import Retention
from natsflow.actors.scheduler import Scheduler
from natsflow.actors.starter import Starter
from natsflow.actors.triggers import Triggers
from natsflow.actors.waits import Waits
from natsflow.actors.worker import WorkerPool
from natsflow.events.errors import InputError, ManifestError, NotFound, Unavailable
from natsflow.manifests.loader import FORMATS
from natsflow.service.admin import start_admin_service
from natsflow.service.config import Config
from natsflow.service.durability import (
    check_embedded,
    embedded_config,
    embedded_syncs_always,
    log_external,
)
from natsflow.service.embedded import EmbeddedServer, check_server_version, free_port
from natsflow.service.health import Health
from natsflow.service.http import serve_http
from natsflow.service.operations import Operations
from natsflow.service.protocol import DeployRequest, request_from
from natsflow.service.roles import OPEN_EMBEDDED, redacted

log = logging.getLogger("natsflow")


@asynccontextmanager
async def connected(config: Config) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A NATS connection: to ``config.nats_url``, or to an embedded server started here."""
    server: EmbeddedServer | None = None
    url = config.nats_url
    if url is None:
        data = Path(config.data_dir)
        (data / "nats").mkdir(parents=True, exist_ok=True)
        monitor_port = free_port()
        server_config = data / "nats-server.conf"
        server_config.write_text(embedded_config(config.durability, config.nats_config, data))
        server = EmbeddedServer(
            config_file=str(server_config.absolute()),
            port=config.nats_port,
            store_dir=str(data / "nats"),
            log_file=str(data / "nats-server.log"),
            extra_args=("-m", str(monitor_port)),
        )
        await server.start()
        url = server.url
        log.info("embedded nats-server ready at %s (log: %s)", url, data / "nats-server.log")
        log.warning(OPEN_EMBEDDED)
        try:
            syncs = await embedded_syncs_always(monitor_port)
            check_embedded(config.durability, syncs, config.nats_config)
        except BaseException:
            await server.stop()
            raise
    try:
        quiet = ConnectionLog()
        nc = await nats.connect(
            servers=url.split(","),
            name="natsflow",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=quiet.error,
            disconnected_cb=quiet.disconnected,
            reconnected_cb=quiet.reconnected,
        )
        try:
            version = await check_server_version(nc)
            where = nc.connected_url.geturl() if nc.connected_url else url
            log.info("connected to nats-server %s at %s", version, redacted(where))
            yield nc, nc.jetstream(timeout=10, publish_async_max_pending=20000)
        finally:
            quiet.closing = True
            with anyio.move_on_after(5, shield=True):
                await nc.drain()
    finally:
        if server is not None:
            await server.stop()


class ConnectionLog:
    """One log line when NATS goes away and one when it is back, not a traceback per retry."""

    def __init__(self) -> None:
        self._errors = 0
        self.closing = False  # set when natsflow closes the connection itself

    async def error(self, exc: Exception) -> None:
        self._errors += 1
        if self._errors == 1:
            log.warning(
                "NATS: %s (retrying; further errors are logged at debug level)",
                exc or type(exc).__name__,
            )
        else:
            log.debug("NATS: %r", exc)

    async def disconnected(self) -> None:
        if not self.closing:
            log.warning("NATS disconnected; reconnecting")

    async def reconnected(self) -> None:
        if self._errors > 1:
            log.info("NATS reconnected (after %d errors)", self._errors)
        else:
            log.info("NATS reconnected")
        self._errors = 0


def load_registry(modules: tuple[str, ...]) -> ActionRegistry:
    """Built-in actions plus the callables each module adds in its ``register(registry)``."""
    registry = builtin_registry()
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise InputError(f"python module {name!r}: {exc}") from None
        register = getattr(module, "register", None)
        if not callable(register):
            raise InputError(f"python module {name!r} has no register(registry) function")
        register(registry)
    return registry


def manifest_files(paths: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in FORMATS))
        else:
            files.append(path)
    return files


async def deploy_all(operations: Operations, paths: tuple[str, ...]) -> None:
    """Deploy every manifest named at start-up; one bad file is reported, not fatal."""
    for path in manifest_files(paths):
        try:
            fields = {
                "manifest": path.read_text(),
                "format": FORMATS.get(path.suffix, path.suffix),
                "source": str(path),
            }
            result = await operations.deploy(request_from(DeployRequest, fields))
            log.info("deployed %s version %s from %s", result.workflow, result.version, path)
        except (ManifestError, InputError, OSError) as exc:
            log.error("not deployed: %s", exc)


async def serve(
    config: Config,
    *,
    actors: bool = True,
    stopping: anyio.Event | None = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run execution actors, workers, admin API and HTTP sidecar until cancelled, or
    until ``stopping`` is set: then drain (``/readyz`` turns 503, no new messages are
    taken, steps in flight get ``config.drain_grace`` seconds, the rest is handed
    back to run again at once elsewhere) and return.

    ``task_status.started`` reports the NATS URL in use once everything is ready.
    With ``actors=False`` the process is a worker only (``natsflow worker``).
    """
    registry = load_registry(config.python_modules)
    metrics = Metrics()
    ready = False
    async with connected(config) as (nc, js):
        metrics.on_refresh(QueueGauges(js, metrics).refresh)  # custom actions' queues
        setup = partial(
            provision,
            js,
            ack_wait=config.takeover_after,
            archive=config.archive,
            archive_max_age_days=config.archive_max_age_days,
            replicated=config.durability == "replicated",
        )
        await setup()
        if config.nats_url is not None:
            url = nc.connected_url.geturl() if nc.connected_url else config.nats_url
            log_external(config.durability, await stream_replicas(js), redacted(url))
        check = partial(
            find_missing, js, actors=actors, workers=config.workers > 0, archive=config.archive
        )
        health = Health(check, setup, lambda: nc.is_connected)
        roles = ("actors",) * actors + ("workers",) * bool(config.workers)
        me = this_instance(roles)
        held_by_others = await deliveries_of_others(js, roles)
        presence = await answer_presence(nc, me)
        definitions = Definitions(js)
        # Group commit pays only where every write waits for a sync (measured: 2x steps/s
        # under fsync); R3 batches go through raft, not measured yet.
        group_commit = config.durability == "fsync"
        publisher = Publisher(nc, group_commit=group_commit)
        # An expired execution's tombstone counts as started: its key never starts it anew.
        starter = Starter(
            definitions,
            publisher,
            IdempotencyKeys(js, publisher),
            partial(read_summary_or_tombstone, js),
        )
        index = (
            ExecutionIndex(
                Path(config.data_dir) / INDEX_FILE,
                SummaryFeed(nc, js),
                partial(steps_in, definitions),
                metrics,
            )
            if actors
            else None
        )
        operations = Operations(
            nc,
            js,
            definitions,
            publisher,
            starter,
            index,
            task_ack_wait=config.takeover_after,
        )
        service = None
        executor: Executor | None = None
        pool: WorkerPool | None = None
        async with anyio.create_task_group() as tg:
            await tg.start(health.run)
            await tg.start(definitions.follow_latest)
            if index is not None:
                await tg.start(index.run)
            if actors:
                await deploy_all(operations, config.deploy_paths)
                executor = Executor(
                    nc,
                    js,
                    Deciders(definitions),
                    metrics,
                    idle_timeout=config.actor_idle_timeout,
                    max_active=config.max_active_actors,
                    snapshot_every=config.snapshot_every,
                    archive=config.archive,
                    publisher=publisher,
                    ack_wait=config.takeover_after,
                    starter=starter,
                    feed=config.feed,
                )
                await tg.start(executor.run)
                triggers = Triggers(
                    nc, js, definitions, starter, publisher, metrics, ack_wait=config.takeover_after
                )
                await tg.start(triggers.run)
                scheduler = Scheduler(
                    nc, js, definitions, starter, partial(read_summary, js), metrics=metrics
                )
                await tg.start(scheduler.run)
                await tg.start(Waits(nc, js, publisher).run)  # subject waits
                if index is not None:  # one instance at a time sweeps: actors.retention
                    retention = Retention(
                        nc, js, definitions, index, metrics, every=config.retention_every
                    )
                    await tg.start(retention.run)
                service = await start_admin_service(nc, operations.handle, tg)
            if config.workers:
                pool = WorkerPool(
                    nc,
                    js,
                    registry,
                    metrics,
                    concurrency=config.workers,
                    ack_wait=config.takeover_after,
                    publisher=Publisher(nc, group_commit=group_commit),
                    store=EventStore(nc, js, publisher),
                    cancel_grace=config.cancel_grace,
                )
                await tg.start(pool.run)
            if config.http_port:
                port = await tg.start(
                    serve_http,
                    operations.handle if actors else None,
                    metrics,
                    lambda: health.reason() if ready else "starting or stopping",
                    config.http_host,
                    config.http_port,
                )
                log.info(
                    "HTTP on http://%s:%s (/healthz /readyz /metrics /v1)", config.http_host, port
                )
            held_here = {"actors": executor.held} if executor is not None else {}
            if pool is not None:
                held_here["workers"] = pool.held
            tg.start_soon(
                take_over, nc, me, held_by_others, held_here, name="take over a stopped instance"
            )
            ready = True
            log.info("natsflow ready (pid %s)", os.getpid())
            task_status.started(nc.connected_url.geturl() if nc.connected_url else "")
            try:
                if stopping is None:
                    await anyio.sleep_forever()
                else:
                    await stopping.wait()
                    ready = False
                    await drain(executor, pool, config.drain_grace)
                    tg.cancel_scope.cancel()
            finally:
                with anyio.move_on_after(2, shield=True):
                    if service is not None:
                        await service.stop()
                    if nc.is_connected:
                        await presence.unsubscribe()


async def steps_in(definitions: Definitions, workflow: str, version: str) -> int | None:
    """How many steps ``version`` of ``workflow`` has (an index row's total); None if gone."""
    try:
        return len((await definitions.get(workflow, version)).steps)
    except NotFound:
        return None


async def deliveries_of_others(js: JetStreamContext, roles: tuple[str, ...]) -> dict[str, Pending]:
    """Per role, the deliveries pending on the consumer this process will pull from,
    read before it pulls: all of them are held by other instances, running or dead."""
    pending: dict[str, Pending] = {}
    if "actors" in roles:
        pending["actors"] = await pending_deliveries(js, INBOX_STREAM, ACTORS_CONSUMER)
    if "workers" in roles:
        pending["workers"] = await pending_deliveries(js, TASKS_STREAM, WORKERS_CONSUMER)
    return pending


async def take_over(
    nc: Client,
    me: Instance,
    held_by_others: dict[str, Pending],
    held_here: dict[str, Held],
) -> None:
    """Deliveries held on a consumer nobody else pulls from or serves belong to a dead
    instance: hand them back at once (instead of after the ack wait). Runs beside the
    pullers, so the question costs no start-up time; a delivery this process holds by
    now (its ack wait ran out and it came here) is not touched."""
    candidates = {
        role: pending
        for role, pending in held_by_others.items()
        if pending.ack_subjects and not pending.pulling
    }
    if not candidates:
        return
    try:
        others = await others_running(nc, me)
    except Unavailable as exc:
        log.info("not asked which instances run (%s): a stopped one's work waits its ack wait", exc)
        return
    for role, pending in candidates.items():
        holders = [f"{o.host}:{o.pid}" for o in others if role in o.roles]
        if holders:
            log.info(
                "%s held by another instance (%s, running): taken over after the ack wait "
                "if it stopped",
                role,
                ", ".join(holders),
            )
            continue
        mine = held_here[role].stream_sequences() if role in held_here else set()
        subjects = [subject for seq, subject in pending.ack_subjects.items() if seq not in mine]
        released = await release(nc, subjects)
        log.info("released %d %s deliveries held by a stopped instance", released, role)


async def drain(executor: Executor | None, pool: WorkerPool | None, grace: float) -> None:
    """Stop taking messages, let the work in hand finish within ``grace`` seconds, hand
    back the rest; actors and workers drain side by side."""
    log.info("draining: taking no new work; steps in flight get %ss to finish", grace)
    async with anyio.create_task_group() as tg:
        if executor is not None:
            tg.start_soon(executor.drain, grace)
        if pool is not None:
            tg.start_soon(pool.drain, grace)
    log.info("drained")
