"""The pipelined publisher resolves every ack: sequences, API errors, no stream, no ack;
and its group commit gives each write the outcome it would have alone."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from natsflow.actors.jetstream.publisher import Publisher, PublishError
from natsflow.actors.jetstream.topology import EVENTS_STREAM as EVENTS
from natsflow.actors.jetstream.topology import ensure_stream, stream_configs
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


# Group commit: writes that queue behind the plain window go out as atomic batches.


async def _events_stream(nc: Client) -> JetStreamContext:
    js = nc.jetstream()
    (events,) = (
        c for c in stream_configs(archive=False, archive_max_age_days=1) if c.name == EVENTS
    )
    await ensure_stream(js, events)
    return js


def _batching(publisher: Publisher, atomic: bool | None = True) -> None:
    """Make the events lane batch: 4 plain writes in flight, then every 4 queued go as a
    batch (costs as if measured, and kept; ``atomic=None``: ask the stream first). Sends
    do not yield to the loop, so which writes share a batch is known."""
    lane = publisher.lane(EVENTS)
    lane.window, lane.min_batch, lane.learn = 4, 4, False
    lane.atomic = atomic


async def _batch_ids(js: JetStreamContext, seqs: list[int]) -> set[str]:
    ids = set()
    for seq in seqs:
        stored = await js.get_msg(EVENTS, seq)
        ids.add((stored.headers or {}).get("Nats-Batch-Id", ""))
    return ids


async def test_concurrent_writes_coalesce_into_batches_with_their_own_sequences(
    nc: Client,
) -> None:
    js = await _events_stream(nc)
    publisher = Publisher(nc)
    _batching(publisher)
    subjects = [f"natsflow.ev.e{i}" for i in range(60)]
    futures = [await publisher.send(s, s.encode()) for s in subjects]
    seqs = await publisher.wait(futures)
    assert sorted(seqs) == list(range(1, 61))
    for subject, seq in zip(subjects, seqs, strict=True):
        stored = await js.get_msg(EVENTS, seq)
        assert (stored.subject, stored.data) == (subject, subject.encode())
    assert publisher.stats.batches >= 1
    assert publisher.stats.batched + publisher.stats.plain == 60
    assert len(await _batch_ids(js, seqs)) > 1  # some plain (""), some batched
    assert publisher._pending == {}


async def test_a_stale_append_in_a_batch_fails_alone(nc: Client) -> None:
    js = await _events_stream(nc)
    publisher = Publisher(nc)
    first = await publisher.publish("natsflow.ev.stale", b"0")
    _batching(publisher)
    expect = "Nats-Expected-Last-Subject-Sequence"
    futures = [
        await publisher.send(f"natsflow.ev.e{i}", b"x", {expect: "0"}) for i in range(4)
    ]  # these four fill the plain window: the rest queue and go as one batch
    fresh = [await publisher.send(f"natsflow.ev.f{i}", b"x", {expect: "0"}) for i in range(3)]
    stale = await publisher.send("natsflow.ev.stale", b"1", {expect: str(first - 1)})
    more = [await publisher.send(f"natsflow.ev.g{i}", b"x", {expect: "0"}) for i in range(4)]
    with pytest.raises(PublishError) as conflict:
        await stale
    assert conflict.value.err_code == 10071
    seqs = await publisher.wait(futures + fresh + more)
    assert sorted(seqs) == list(range(2, 13))
    assert (publisher.stats.batches, publisher.stats.failed_batches) == (1, 1)
    stored = await js.get_last_msg(EVENTS, "natsflow.ev.stale")
    assert stored.seq == first


async def test_a_duplicate_message_id_in_a_batch_is_answered_as_when_plain(nc: Client) -> None:
    await _events_stream(nc)
    publisher = Publisher(nc)
    msg_id = {"Nats-Msg-Id": "once"}
    original = await publisher.publish("natsflow.ev.dup", b"0", msg_id)
    plain_again = await publisher.publish("natsflow.ev.dup", b"0", msg_id)
    _batching(publisher)
    window = [await publisher.send(f"natsflow.ev.e{i}", b"x") for i in range(4)]
    queued = [await publisher.send(f"natsflow.ev.f{i}", b"x") for i in range(3)]
    batched_again = await publisher.send("natsflow.ev.dup", b"0", msg_id)
    assert await batched_again == plain_again == original
    assert sorted(await publisher.wait(window + queued)) == list(range(2, 9))
    assert (publisher.stats.batches, publisher.stats.failed_batches) == (1, 1)


async def test_lone_writes_go_out_plain(nc: Client) -> None:
    js = await _events_stream(nc)
    publisher = Publisher(nc)
    seqs = [await publisher.publish(f"natsflow.ev.e{i % 3}", b"x") for i in range(30)]
    assert seqs == list(range(1, 31))
    assert (publisher.stats.plain, publisher.stats.batches) == (30, 0)
    assert await _batch_ids(js, seqs) == {""}


async def test_headers_a_batch_does_not_take_go_plain(nc: Client) -> None:
    js = await _events_stream(nc)
    publisher = Publisher(nc)
    _batching(publisher)
    rollups = [
        await publisher.send(f"natsflow.snap.s{i}", b"x", {"Nats-Rollup": "sub"}) for i in range(20)
    ]
    assert sorted(await publisher.wait(rollups)) == list(range(1, 21))
    assert publisher.stats.batches == 0
    assert await _batch_ids(js, list(range(1, 21))) == {""}


async def test_a_stream_without_atomic_batches_gets_plain_writes(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name=EVENTS, subjects=["natsflow.ev.>"]))
    publisher = Publisher(nc)
    _batching(publisher, atomic=None)
    futures = [await publisher.send(f"natsflow.ev.e{i}", b"x") for i in range(40)]
    assert sorted(await publisher.wait(futures)) == list(range(1, 41))
    assert publisher.stats.batches == 0
    assert publisher.lane(EVENTS).atomic is False
