"""The engine with every JetStream write it can batch going out in atomic batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import api

from natsflow.actors.jetstream.lanes import Lane, Write
from natsflow.actors.jetstream.topology import (
    EVENTS_STREAM,
    EXECUTIONS_BUCKET,
    INBOX_STREAM,
    TASKS_STREAM,
    provision,
)
from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import running

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

WIDE = """
name: wide
steps:
  each:
    action: noop
    for_each:
      items: "${{ input.items }}"
      key: "${{ item }}"
    with: {item: "${{ item }}"}
  done:
    action: noop
    needs: [each]
    with: {n: "${{ input.n }}"}
output: "${{ steps.done.output }}"
"""


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every lane batches as soon as two writes queue behind one in flight (as if each
    write took the server long to sync); the sizes of the batches sent are recorded."""
    sizes: list[int] = []
    init, take = Lane.__init__, Lane.take_batch

    def batching_init(self: Lane, stream: str) -> None:
        init(self, stream)
        self.window, self.min_batch, self.learn = 1, 2, False

    def recorded_take(self: Lane) -> list[Write]:
        batch = take(self)
        sizes.append(len(batch))
        return batch

    monkeypatch.setattr(Lane, "__init__", batching_init)
    monkeypatch.setattr(Lane, "take_batch", recorded_take)
    return sizes


async def test_executions_complete_with_their_writes_batched(
    nats_server: EmbeddedServer, batches: list[int]
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(WIDE)
        await engine.deploy(EXAMPLES / "hello.yaml")
        items = [f"i{k}" for k in range(8)]
        wide = [engine.start("wide", {"items": items, "n": n}) for n in range(10)]
        hello = [engine.start("hello", {"name": f"n{n}"}) for n in range(20)]
        started = await asyncio.gather(*wide, *hello)
        shown = await asyncio.gather(*(engine.wait_done(e, timeout=60) for e in started))
    for n, done in enumerate(shown[:10]):
        assert done["status"] == "completed", done
        assert done["output"] == {"n": n}
        assert done["steps_done"] == done["steps_total"] == 2
    for n, done in enumerate(shown[10:]):
        assert done["status"] == "completed", done
        assert done["output"] == {"greeting": f"Hello, n{n}!"}
    assert sum(batches) > 0, batches  # writes did go out in batches


async def test_provisioning_turns_atomic_batches_on_for_existing_streams(nc: Client) -> None:
    js = nc.jetstream()
    # As an older natsflow left them: no atomic batches anywhere.
    await js.add_stream(api.StreamConfig(name=EVENTS_STREAM, subjects=["natsflow.ev.>"]))
    await js.create_key_value(api.KeyValueConfig(bucket=EXECUTIONS_BUCKET, history=1))
    await provision(js, ack_wait=30)
    for stream in (EVENTS_STREAM, INBOX_STREAM, TASKS_STREAM, f"KV_{EXECUTIONS_BUCKET}"):
        config = (await js.stream_info(stream)).config
        assert config.allow_atomic, stream
    kv = (await js.stream_info(f"KV_{EXECUTIONS_BUCKET}")).config
    assert kv.allow_direct
    dlq = (await js.stream_info("NATSFLOW_DLQ")).config
    assert not dlq.allow_atomic  # its writes never batch
