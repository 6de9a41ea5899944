"""Run the whole natsflow service in-process against a test nats-server, and drive it.

``async with running(server) as engine:`` starts ``service.app.serve`` in a task
group (actors, workers, admin micro service; HTTP only when asked for) and yields
an ``Engine``: a client of the admin API with helpers to deploy, start and wait.
Leaving the block cancels the service and closes the client.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
from nats.aio.client import Client

from natsflow.service.app import serve
from natsflow.service.cli import CliError, request
from natsflow.service.config import Config
from natsflow.service.embedded import EmbeddedServer

TERMINAL = ("completed", "failed", "cancelled")
PYTHON_MODULES = ("natsflow.actors.examples",)


def natsflow_script() -> str:
    """The ``natsflow`` console script installed next to this interpreter."""
    found = shutil.which("natsflow", path=os.path.dirname(sys.executable))
    assert found is not None, "the natsflow console script is not installed in this venv"
    return found


def manifest_format(path: Path) -> str:
    return {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}[path.suffix]


class Engine:
    """A client of one natsflow service (or several sharing a server) over its admin API."""

    def __init__(self, nc: Client, url: str) -> None:
        self.nc = nc
        self.url = url

    async def call(self, verb: str, payload: dict[str, Any], within: float = 10) -> Any:
        return await request(self.nc, verb, payload, within)

    async def deploy(self, manifest: str | Path, fmt: str = "yaml") -> dict[str, Any]:
        """Deploy manifest text (``fmt``) or a manifest file (format from its suffix)."""
        if isinstance(manifest, Path):
            text = await anyio.Path(manifest).read_text()
            fmt, source = manifest_format(manifest), str(manifest)
        else:
            text, source = manifest, "<test>"
        result: dict[str, Any] = await self.call(
            "deploy", {"manifest": text, "format": fmt, "source": source}
        )
        return result

    async def start_full(
        self, workflow: str, input: Any = None, key: str | None = None
    ) -> dict[str, Any]:
        payload = {"workflow": workflow, "input": input, "idempotency_key": key}
        result: dict[str, Any] = await self.call("start", payload)
        return result

    async def start(self, workflow: str, input: Any = None, key: str | None = None) -> str:
        """Start an execution of the latest version; returns its id."""
        execution_id: str = (await self.start_full(workflow, input, key))["execution_id"]
        return execution_id

    async def show(self, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("show", {"execution_id": execution_id})
        return result

    async def history(self, execution_id: str) -> list[dict[str, Any]]:
        result: dict[str, Any] = await self.call("history", {"execution_id": execution_id})
        events: list[dict[str, Any]] = result["events"]
        return events

    async def ls(self, **filters: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.call("ls", {"limit": 1000, **filters})
        return rows

    async def cancel(self, execution_id: str, reason: str = "test") -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "cancel", {"execution_id": execution_id, "reason": reason}
        )
        return result

    async def wait_for(
        self,
        execution_id: str,
        statuses: tuple[str, ...],
        timeout: float,  # noqa: ASYNC109 (the deadline of a poll, named like its callers')
    ) -> dict[str, Any]:
        """Poll ``show`` until the execution's status is one of ``statuses``.

        An execution not visible yet (not found) or a moment without any service
        answering (a restart) is waited out until the deadline.
        """
        last: dict[str, Any] | None = None
        try:
            with anyio.fail_after(timeout):
                while True:
                    try:
                        last = await self.show(execution_id)
                        if last["status"] in statuses:
                            return last
                    except CliError as exc:
                        if "not found" not in str(exc) and exc.code != 3:
                            raise
                    await anyio.sleep(0.05)
        except TimeoutError:
            state = last["status"] if last else "not found"
            raise AssertionError(
                f"execution {execution_id} is {state}, not {statuses}, after {timeout}s: {last}"
            ) from None

    async def wait_done(
        self,
        execution_id: str,
        timeout: float = 20,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Poll ``show`` until the execution is completed, failed or cancelled."""
        return await self.wait_for(execution_id, TERMINAL, timeout)

    async def wait_ready(self, within: float = 20) -> None:
        """Poll the admin API until some natsflow service answers."""
        with anyio.fail_after(within):
            while True:
                try:
                    await self.call("workflows", {}, within=2)
                    return
                except CliError as exc:
                    if exc.code != 3:
                        raise
                await anyio.sleep(0.05)


def service_config(server_url: str, **overrides: Any) -> Config:
    """The service configuration the integration tests run with (short ack wait)."""
    settings: dict[str, Any] = {
        "nats_url": server_url,
        "http_port": 0,
        "workers": 8,
        "task_ack_wait": 2.0,
        "actor_idle_timeout": 5.0,
        "python_modules": PYTHON_MODULES,
        "deploy_paths": (),
    }
    settings.update(overrides)
    return Config(**settings)


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Engine]:
    """An ``Engine`` for a service that runs elsewhere (another process)."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        yield Engine(nc, url)
    finally:
        await nc.close()


@asynccontextmanager
async def running(
    server: EmbeddedServer, *, instances: int = 1, **overrides: Any
) -> AsyncIterator[Engine]:
    """Run ``instances`` natsflow services in-process against ``server``; yield a client."""
    config = service_config(server.url, **overrides)
    async with anyio.create_task_group() as tg:
        for _ in range(instances):
            await tg.start(serve, config)
        async with connect(server.url) as engine:
            yield engine
        tg.cancel_scope.cancel()
