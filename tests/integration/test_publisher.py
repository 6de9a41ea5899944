"""The pipelined publisher resolves every ack: sequences, API errors, no stream, no ack."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js import api

from natsflow.actors.jetstream.publisher import Publisher, PublishError
from natsflow.events.errors import Unavailable


async def test_acks_errors_and_missing_streams_all_resolve(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="T", subjects=["t.>"]))
    publisher = Publisher(nc)
    futures = [await publisher.send(f"t.{i}", b"x") for i in range(50)]
    assert await publisher.wait(futures) == list(range(1, 51))

    with pytest.raises(PublishError) as conflict:
        await publisher.publish("t.0", b"y", {"Nats-Expected-Last-Subject-Sequence": "0"})
    assert conflict.value.err_code == 10071

    with pytest.raises(Unavailable, match=r"publish to nowhere\.at\.all: .*no stream"):
        await publisher.publish("nowhere.at.all", b"z")
    # Nothing is left waiting for an answer.
    assert publisher._pending == {}


async def test_a_closed_connection_and_a_missing_ack_are_unavailable(nc: Client) -> None:
    # Nobody answers on this subject (no stream, and no 503 either: a plain subscriber).
    await nc.subscribe("quiet.>")
    publisher = Publisher(nc, ack_timeout=0.2)
    with pytest.raises(Unavailable, match=r"publish to quiet\.x: .*no ack within 0\.2s"):
        await publisher.publish("quiet.x", b"x")
    await nc.close()
    with pytest.raises(Unavailable, match=r"publish to t\.1: .*connection closed"):
        await publisher.publish("t.1", b"x")
    assert publisher._pending == {}
