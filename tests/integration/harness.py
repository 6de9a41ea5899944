"""Run the whole natsflow service in-process against a test nats-server, and drive it.

``async with running(server) as engine:`` starts ``service.app.serve`` in a task
group (actors, workers, admin micro service; HTTP only when asked for) and yields
an ``Engine``: the public ``natsflow.Client`` with helpers to deploy, start and wait.
Leaving the block cancels the service and closes the client.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from natsflow.events.errors import NotFound, Unavailable
from natsflow.service.app import serve
from natsflow.service.client import Client
from natsflow.service.config import Config
from natsflow.service.embedded import EmbeddedServer
from natsflow.service.protocol import REQUEST_TYPES, Deployed, DeployRequest, request_from
from tests.eventually import eventually

TERMINAL = ("completed", "failed", "cancelled")
PYTHON_MODULES = ("natsflow.actors.examples",)


def natsflow_script() -> str:
    """The ``natsflow`` console script installed next to this interpreter."""
    found = shutil.which("natsflow", path=os.path.dirname(sys.executable))
    assert found is not None, "the natsflow console script is not installed in this venv"
    return found


def _plain(reply: Any) -> Any:
    """A reply as the plain JSON values the CLI's ``--json`` prints."""
    return msgspec.json.decode(msgspec.json.encode(reply))


class Engine:
    """A test's handle on one natsflow service (or several sharing a server).

    ``client`` is the public ``natsflow.Client``; the helpers below go through
    it and answer plain JSON values (dicts and lists, as ``--json`` prints
    them), and wait for conditions with ``eventually``.
    """

    def __init__(self, client: Client, url: str) -> None:
        self.client = client
        self.nc = client.nc
        self.url = url

    async def call(self, verb: str, payload: dict[str, Any], within: float = 10) -> Any:
        """Send ``natsflow.api.<verb>`` with ``payload``; the reply as plain JSON values."""
        request = request_from(REQUEST_TYPES[verb], payload)
        return await Client(self.nc, request_timeout=within).request(request, object)

    async def deploy(self, manifest: str | Path, fmt: str = "yaml") -> dict[str, Any]:
        """Deploy manifest text (``fmt``) or a manifest file (format from its suffix)."""
        if isinstance(manifest, Path):
            deployed = await self.client.deploy_file(manifest)
        else:
            fields = {"manifest": manifest, "format": fmt, "source": "<test>"}
            deployed = await self.client.request(request_from(DeployRequest, fields), Deployed)
        result: dict[str, Any] = _plain(deployed)
        return result

    async def start_full(
        self, workflow: str, input: Any = None, key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = _plain(
            await self.client.start(workflow, input, idempotency_key=key)
        )
        return result

    async def start(self, workflow: str, input: Any = None, key: str | None = None) -> str:
        """Start an execution of the latest version; returns its id."""
        return (await self.client.start(workflow, input, idempotency_key=key)).execution_id

    async def show(self, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = _plain(await self.client.show(execution_id))
        return result

    async def history(self, execution_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = _plain((await self.client.history(execution_id)).events)
        return events

    async def ls(self, **filters: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = _plain(await self.client.ls(limit=1000, **filters))
        return rows

    async def cancel(self, execution_id: str, reason: str = "test") -> dict[str, Any]:
        result: dict[str, Any] = _plain(await self.client.cancel(execution_id, reason))
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

        async def reached() -> dict[str, Any]:
            shown = await self.show(execution_id)
            assert shown["status"] in statuses, (
                f"execution {execution_id} is {shown['status']}, not {statuses}: {shown}"
            )
            return shown

        return await eventually(reached, within=timeout, ignoring=(NotFound, Unavailable))

    async def wait_done(
        self,
        execution_id: str,
        timeout: float = 20,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Poll ``show`` until the execution is completed, failed or cancelled."""
        return await self.wait_for(execution_id, TERMINAL, timeout)

    async def wait_ready(self, within: float = 20) -> None:
        """Poll the admin API until some natsflow service answers."""
        quick = Client(self.nc, request_timeout=2)
        await eventually(quick.workflows, within=within, ignoring=(Unavailable,))


# Every service configuration's data directory lives under one directory, removed when
# the test process exits (TemporaryDirectory's finalizer), so runs leave nothing behind.
_DATA_ROOT = tempfile.TemporaryDirectory(prefix="natsflow-tests-")


def service_config(server_url: str, **overrides: Any) -> Config:
    """The service configuration the integration tests run with (short ack wait)."""
    settings: dict[str, Any] = {
        "nats_url": server_url,
        "http_port": 0,
        "workers": 8,
        "takeover_after": 2.0,
        "actor_idle_timeout": 5.0,
        "python_modules": PYTHON_MODULES,
        "deploy_paths": (),
        # the execution index's file: one directory per service configuration
        "data_dir": tempfile.mkdtemp(prefix="service-", dir=_DATA_ROOT.name),
    }
    settings.update(overrides)
    return Config(**settings)


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[Engine]:
    """An ``Engine`` for a service that runs elsewhere (another process)."""
    async with await Client.connect(url, connect_timeout=5) as client:
        yield Engine(client, url)


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
