"""A code app whose workflows declare triggers: a subject and a schedule."""

from __future__ import annotations

from typing import Any

from natsflow import step, workflow

NATSFLOW_APP = "trig"


@step
async def stamp(value: Any) -> dict[str, Any]:
    return {"stamped": value}


@workflow(name="trig_orders", triggers=[{"subject": "codeorders.*.created"}])
async def on_order(order: dict[str, Any]) -> dict[str, Any]:
    stamped: dict[str, Any] = await stamp(order["order"])
    return stamped


@workflow(name="trig_tick", triggers=[{"every": "1s", "input": {"source": "clock"}}])
async def on_tick(tick: dict[str, Any]) -> dict[str, Any]:
    stamped: dict[str, Any] = await stamp(tick["scheduled_at"])
    return stamped
