"""``durability: replicated`` on a real 3-node nats-server cluster: R3 streams, work runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import nats

from natsflow.actors.jetstream.topology import EVENTS_STREAM, EXECUTIONS_BUCKET, TASKS_STREAM
from natsflow.events.errors import Unavailable
from natsflow.service.app import serve
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import connect, service_config


@asynccontextmanager
async def cluster(tmp_path: Path, size: int = 3) -> AsyncIterator[list[EmbeddedServer]]:
    """``size`` nats-servers with JetStream, routed to each other, on free loopback ports."""
    routes = [free_port() for _ in range(size)]
    servers = []
    for index in range(size):
        node = tmp_path / f"n{index}"
        node.mkdir()
        others = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes if p != routes[index])
        config = node / "nats.conf"
        config.write_text(
            f"server_name: n{index}\n"
            f'cluster {{ name: natsflow-test, listen: "127.0.0.1:{routes[index]}", '
            f"routes: [{others}] }}\n"
        )
        servers.append(
            EmbeddedServer(
                config_file=str(config),
                port=free_port(),
                store_dir=str(node / "jetstream"),
                log_file=str(node / "nats-server.log"),
            )
        )
    async with AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        yield servers


async def _meta_leader_elected(url: str) -> None:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


async def test_replicated_durability_runs_on_r3_streams(tmp_path: Path) -> None:
    async with cluster(tmp_path) as servers:
        urls = ",".join(server.url for server in servers)
        await eventually(
            lambda: _meta_leader_elected(servers[0].url), within=30, ignoring=(Exception,)
        )
        config = service_config(urls, durability="replicated")
        async with anyio.create_task_group() as tg:
            await tg.start(serve, config)
            async with connect(servers[1].url) as engine:
                js = engine.nc.jetstream()
                for stream in (EVENTS_STREAM, TASKS_STREAM, f"KV_{EXECUTIONS_BUCKET}"):
                    info = await js.stream_info(stream)
                    assert info.config.num_replicas == 3, stream
                await engine.deploy("name: hi\nsteps:\n  a: {action: noop}\n")
                execution = await eventually(
                    lambda: engine.start("hi", {}), within=10, ignoring=(Unavailable,)
                )
                shown = await engine.wait_done(execution, timeout=30)
                assert shown["status"] == "completed", shown
            tg.cancel_scope.cancel()
