"""Group commit lanes: when writes queue for a batch, and what a batch may hold."""

from __future__ import annotations

import asyncio
import math

from natsflow.actors.jetstream.lanes import MAX_BATCH, Lane, Write
from natsflow.actors.jetstream.topology import atomic_stream

SLOW, FAST = 2e-3, 3e-5  # echo gaps seen here with sync_interval always, and lazy


def _fill(lane: Lane, gaps: list[float]) -> None:
    for gap in gaps:
        lane.sample(gap)


def test_a_lane_batches_only_while_most_writes_are_slow() -> None:
    lane = Lane("S")
    assert (lane.window, lane.min_batch) == (math.inf, math.inf)  # nothing measured
    _fill(lane, [SLOW] * (Lane.SAMPLES - 1))
    assert lane.window == math.inf  # not enough samples yet
    lane.sample(SLOW)
    assert (lane.window, lane.min_batch) == (Lane.MIN_WINDOW, Lane.MIN_BATCH)
    # Outliers either way do not flip it: the median decides.
    _fill(lane, [0.0] * (Lane.SAMPLES // 2))
    assert lane.window == Lane.MIN_WINDOW
    _fill(lane, [FAST] * (Lane.SAMPLES // 2 + 1))
    assert lane.window == math.inf
    _fill(lane, [SLOW] * (Lane.SAMPLES // 2))
    assert lane.window == math.inf


def test_a_stream_without_atomic_batches_never_queues() -> None:
    lane = Lane("S")
    lane.no_batches()
    _fill(lane, [SLOW] * Lane.SAMPLES)
    assert (lane.window, lane.min_batch) == (math.inf, math.inf)
    lane.outstanding = 1000
    assert lane.admits()


def test_a_batch_holds_live_writes_and_one_subject_check_each() -> None:
    loop = asyncio.new_event_loop()
    try:
        lane = Lane("S")

        def write(subject: str, expect: bool = False) -> Write:
            headers = {"Nats-Expected-Last-Subject-Sequence": "3"} if expect else None
            return Write(subject, b"", headers, loop.create_future())

        gone = write("a")
        gone.future.cancel()
        first = [write("a", expect=True), write("b"), write("b"), write("c", expect=True)]
        lane.queue.extend([gone, *first, write("b", expect=True), write("d")])
        assert lane.take_batch() == first  # a check on "b", written already, starts the next
        assert [w.subject for w in lane.queue] == ["b", "d"]
        lane.queue.extend(write(f"x{i}") for i in range(MAX_BATCH + 5))
        assert len(lane.take_batch()) == MAX_BATCH
        assert len(lane.queue) == 7
    finally:
        loop.close()


def test_subjects_map_to_the_streams_that_take_batches() -> None:
    assert atomic_stream("natsflow.ev.e1") == "NATSFLOW_EVENTS"
    assert atomic_stream("natsflow.snap.e1") == "NATSFLOW_EVENTS"
    assert atomic_stream("natsflow.in.e1") == "NATSFLOW_INBOX"
    assert atomic_stream("natsflow.sched.e1.t") == "NATSFLOW_INBOX"
    assert atomic_stream("natsflow.task.noop") == "NATSFLOW_TASKS"
    assert atomic_stream("$KV.natsflow_executions.e1") == "KV_natsflow_executions"
    for other in ("natsflow.dlq.inbox", "$KV.natsflow_workflows.w", "orders.new", "natsflow"):
        assert atomic_stream(other) is None
