"""The event store against a real server: one decider per execution, reads, snapshots."""

from __future__ import annotations

import anyio
import pytest
from msgspec.structs import replace
from nats.aio.client import Client

from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import provision
from natsflow.events.errors import ConcurrencyConflict
from natsflow.events.fold import fold
from natsflow.events.model import INITIAL, AnyEvent, ExecutionStarted, StepScheduled


async def test_two_deciders_racing_on_one_execution_only_one_appends(nc: Client) -> None:
    js = nc.jetstream()
    await provision(js, ack_wait=5)
    first, second = EventStore(nc, js), EventStore(nc, js)
    started = (ExecutionStarted(at=1.0, execution_id="race", workflow="w", version="v"),)
    seq = await first.append("race", started, 0)

    # Both loaded the same state (last sequence `seq`) and decide at once.
    results: list[int | ConcurrencyConflict] = []

    async def decide(store: EventStore, step: str) -> None:
        event = StepScheduled(at=2.0, step=step, attempt=1, action="noop")
        try:
            results.append(await store.append("race", (event,), seq))
        except ConcurrencyConflict as conflict:
            results.append(conflict)

    async with anyio.create_task_group() as tg:
        tg.start_soon(decide, first, "a")
        tg.start_soon(decide, second, "b")

    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, ConcurrencyConflict) for r in results) == 1
    loaded = await first.load("race")
    assert loaded.state.events == 2
    assert len(loaded.state.steps) == 1  # exactly one decision was stored


async def test_a_long_history_is_read_back_in_batches(nc: Client) -> None:
    """More messages than one direct-get batch: the reader pages through them all."""
    js = nc.jetstream()
    await provision(js, ack_wait=5)
    store = EventStore(nc, js)
    execution = "long"
    events: list[AnyEvent] = [
        ExecutionStarted(at=0.0, execution_id=execution, workflow="w", version="v")
    ]
    seq = await store.append(execution, (events[0],), 0)
    for i in range(2500):
        event = StepScheduled(at=float(i), step="s", attempt=1, action="noop", iteration=i)
        seq = await store.append(execution, (event,), seq)
        events.append(event)
    loaded = await store.load(execution, use_snapshot=False)
    assert loaded.events_read == 2501
    assert loaded.last_seq == seq
    assert loaded.state == fold(events, replace(INITIAL, execution_id=execution))


async def test_a_stale_snapshot_writer_is_refused(nc: Client) -> None:
    js = nc.jetstream()
    await provision(js, ack_wait=5)
    store = EventStore(nc, js)
    started = (ExecutionStarted(at=1.0, execution_id="snap", workflow="w", version="v"),)
    seq = await store.append("snap", started, 0)
    state = fold(started, replace(INITIAL, execution_id="snap"))
    snapshot_seq = await store.write_snapshot("snap", state, seq, 0)
    # A second writer that never saw that snapshot must not replace it.
    with pytest.raises(ConcurrencyConflict):
        await store.write_snapshot("snap", state, seq, 0)
    assert (await store.load("snap")).snapshot_seq == snapshot_seq
