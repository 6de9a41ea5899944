"""Readiness bookkeeping: what is missing is named, healed, and logged once each way."""

from __future__ import annotations

import logging

import pytest

from natsflow.events.errors import Unavailable
from natsflow.service.health import Health


class Topology:
    """A fake topology: what ``check`` reports missing, and how often ``heal`` ran."""

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.heals = 0
        self.heal_error: Exception | None = None
        self.outage = False
        self.connected = True

    async def check(self) -> list[str]:
        if self.outage:
            raise Unavailable("check natsflow's streams and consumers: NATS unavailable")
        return list(self.missing)

    async def heal(self) -> None:
        self.heals += 1
        if self.heal_error is not None:
            raise self.heal_error

    def health(self) -> Health:
        return Health(self.check, self.heal, lambda: self.connected)


async def test_ready_when_connected_and_nothing_is_missing() -> None:
    topology = Topology()
    health = topology.health()
    await health.check_once()
    assert health.reason() is None
    topology.connected = False
    assert health.reason() == "not connected to NATS"
    assert topology.heals == 0


async def test_a_missing_consumer_is_named_healed_and_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topology = Topology()
    health = topology.health()
    topology.missing = ["consumer natsflow-workers on NATSFLOW_TASKS"]
    with caplog.at_level(logging.INFO, logger="natsflow"):
        await health.check_once()
        await health.check_once()  # still missing: provisioned again, no second line
        assert health.reason() == "consumer natsflow-workers on NATSFLOW_TASKS is missing"
        topology.missing = []
        await health.check_once()
        await health.check_once()
    assert health.reason() is None
    assert topology.heals == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "consumer natsflow-workers on NATSFLOW_TASKS missing: not ready; provisioning it again",
        "consumer natsflow-workers on NATSFLOW_TASKS back: ready again",
    ]


async def test_a_failed_heal_is_in_the_reason_and_the_checks_go_on() -> None:
    topology = Topology()
    health = topology.health()
    topology.missing = ["stream NATSFLOW_TASKS", "consumer natsflow-workers on NATSFLOW_TASKS"]
    topology.heal_error = RuntimeError("insufficient resources")
    await health.check_once()
    assert health.reason() == (
        "stream NATSFLOW_TASKS, consumer natsflow-workers on NATSFLOW_TASKS are missing"
        " (re-provisioning failed: insufficient resources)"
    )
    topology.heal_error = None
    await health.check_once()
    assert health.reason() == (
        "stream NATSFLOW_TASKS, consumer natsflow-workers on NATSFLOW_TASKS are missing"
    )


async def test_an_outage_during_a_check_keeps_the_last_finding() -> None:
    topology = Topology()
    health = topology.health()
    topology.missing = ["stream NATSFLOW_INBOX"]
    await health.check_once()
    topology.outage = True
    topology.missing = []
    await health.check_once()
    assert health.reason() == "stream NATSFLOW_INBOX is missing"
    assert topology.heals == 1
