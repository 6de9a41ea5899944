"""Idle actors leave memory (with a snapshot); the next message activates them again."""

from __future__ import annotations

import re

import aiohttp

from natsflow.service.embedded import EmbeddedServer, free_port
from tests.eventually import eventually
from tests.integration.harness import running

NAPS = """
name: naps
steps:
  nap: {action: sleep, with: {duration: 1500ms}}
  done: {action: noop, needs: [nap], with: {ok: true}}
"""


def gauge(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert found, f"{name} not exported"
    return float(found.group(1))


async def test_sleeping_executions_are_passivated_and_wake_up(nats_server: EmbeddedServer) -> None:
    port = free_port()
    async with (
        running(nats_server, http_port=port, actor_idle_timeout=0.3) as engine,
        aiohttp.ClientSession() as http,
    ):
        await engine.deploy(NAPS)
        executions = [await engine.start("naps") for _ in range(20)]

        async def all_passivated() -> str:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
            assert gauge(metrics, "natsflow_active_actors") == 0, "actors still active"
            return metrics

        # While they sleep on their durable timers, no actor stays in memory.
        metrics = await eventually(all_passivated, within=10)
        assert gauge(metrics, "natsflow_snapshots_written_total") >= len(executions)

        # The timers fire into the inboxes: each actor is activated from its snapshot.
        for execution in executions:
            shown = await engine.wait_done(execution)
            assert shown["status"] == "completed", shown
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = await response.text()
    assert gauge(metrics, "natsflow_actor_activations_total") >= len(executions)
