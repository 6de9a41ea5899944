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
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.topology import find_missing, provision
from natsflow.actors.metrics import Metrics
from natsflow.actors.starter import Starter
from natsflow.actors.worker import WorkerPool
from natsflow.events.errors import InputError, ManifestError
from natsflow.manifests.loader import FORMATS
from natsflow.service.admin import start_admin_service
from natsflow.service.config import Config
from natsflow.service.embedded import EmbeddedServer, check_server_version
from natsflow.service.health import Health
from natsflow.service.http import serve_http
from natsflow.service.operations import Operations
from natsflow.service.protocol import DeployRequest, request_from

log = logging.getLogger("natsflow")


@asynccontextmanager
async def connected(config: Config) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A NATS connection: to ``config.nats_url``, or to an embedded server started here."""
    server: EmbeddedServer | None = None
    url = config.nats_url
    if url is None:
        data = Path(config.data_dir)
        (data / "nats").mkdir(parents=True, exist_ok=True)
        server = EmbeddedServer(
            config_file=config.nats_config,
            port=config.nats_port,
            store_dir=str(data / "nats"),
            log_file=str(data / "nats-server.log"),
        )
        await server.start()
        url = server.url
        log.info("embedded nats-server ready at %s (log: %s)", url, data / "nats-server.log")
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
            log.info("connected to nats-server %s at %s", version, nc.connected_url)
            yield nc, nc.jetstream(timeout=10, publish_async_max_pending=20000)
        finally:
            with anyio.move_on_after(5, shield=True):
                await nc.drain()
    finally:
        if server is not None:
            await server.stop()


class ConnectionLog:
    """One log line when NATS goes away and one when it is back, not a traceback per retry."""

    def __init__(self) -> None:
        self._errors = 0

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
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled: execution actors, workers, admin API and HTTP sidecar.

    ``task_status.started`` reports the NATS URL in use once everything is ready.
    With ``actors=False`` the process is a worker only (``natsflow worker``).
    """
    registry = load_registry(config.python_modules)
    metrics = Metrics()
    ready = False
    async with connected(config) as (nc, js):
        setup = partial(
            provision,
            js,
            ack_wait=config.task_ack_wait,
            archive=config.archive,
            archive_max_age_days=config.archive_max_age_days,
        )
        await setup()
        check = partial(
            find_missing, js, actors=actors, workers=config.workers > 0, archive=config.archive
        )
        health = Health(check, setup, lambda: nc.is_connected)
        definitions = Definitions(js)
        publisher = Publisher(nc)
        starter = Starter(definitions, publisher, IdempotencyKeys(js), partial(read_summary, js))
        operations = Operations(nc, js, definitions, publisher, starter)
        service = None
        async with anyio.create_task_group() as tg:
            await tg.start(health.run)
            await tg.start(definitions.follow_latest)
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
                )
                await tg.start(executor.run)
                service = await start_admin_service(nc, operations.handle, tg)
            if config.workers:
                pool = WorkerPool(
                    nc,
                    js,
                    registry,
                    metrics,
                    concurrency=config.workers,
                    ack_wait=config.task_ack_wait,
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
            ready = True
            log.info("natsflow ready (pid %s)", os.getpid())
            task_status.started(nc.connected_url.geturl() if nc.connected_url else "")
            try:
                await anyio.sleep_forever()
            finally:
                if service is not None:
                    with anyio.move_on_after(2, shield=True):
                        await service.stop()
