"""The pipelined publisher resolves every ack: sequences, API errors, no stream."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js import api

from natsflow.actors.jetstream.publisher import Publisher, PublishError


async def test_acks_errors_and_missing_streams_all_resolve(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="T", subjects=["t.>"]))
    publisher = Publisher(nc)
    futures = [await publisher.send(f"t.{i}", b"x") for i in range(50)]
    assert await publisher.wait(futures) == list(range(1, 51))

    with pytest.raises(PublishError) as conflict:
        await publisher.publish("t.0", b"y", {"Nats-Expected-Last-Subject-Sequence": "0"})
    assert conflict.value.err_code == 10071

    with pytest.raises(PublishError, match="no stream"):
        await publisher.publish("nowhere.at.all", b"z")
    # Nothing is left waiting for an answer.
    assert publisher._pending == {}
