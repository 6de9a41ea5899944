"""A small code app for the decider's tests: steps, a sleep, a signal wait, gather."""

from __future__ import annotations

import dataclasses
from typing import Any

from natsflow.code import gather, now, patched, sleep, step, uuid, wait_for_signal, workflow

NATSFLOW_APP = "demo"


@dataclasses.dataclass
class Box:
    id: str
    size: int


@step
async def create_box(name: str) -> Box:
    return Box(id=f"box-{name}", size=1)


@step(retry=3)
def fill(box: Box, n: int) -> int:
    return box.size + n


@step
async def ship(box: Box) -> str:
    return f"shipped {box.id}"


@workflow(name="pack")
async def pack(order: dict[str, Any]) -> dict[str, Any]:
    box = await create_box(order["name"])
    filled = await fill(box, 2)
    await sleep(5)
    approval = await wait_for_signal("approve", timeout=60, default="auto")
    a, b = await gather(fill(box, 10), fill(box, 20))
    label = await ship(box)
    return {
        "label": label,
        "filled": filled,
        "approval": approval,
        "sum": a + b,
        "at": now(),
        "id": uuid(),
    }


@workflow(name="patchy")
async def patchy(_: Any = None) -> str:
    box = await create_box("p")
    if patched("extra-fill"):
        await fill(box, 1)
    return await ship(box)
