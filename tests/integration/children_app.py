"""A code app for the child-workflow tests: a code child of a manifest parent, and a
code parent of a manifest child."""

from __future__ import annotations

from typing import Any

from natsflow import start_child, step, workflow

NATSFLOW_APP = "kids"


@step
async def double(n: int) -> int:
    return n * 2


@workflow(name="kids_leaf")
async def leaf(order: dict[str, int]) -> dict[str, int]:
    return {"doubled": await double(order["n"])}


@workflow(name="kids_parent")
async def parent(order: dict[str, int]) -> dict[str, Any]:
    child = await start_child("manifest-leaf", {"n": order["n"]})
    return {"from_manifest": child}
