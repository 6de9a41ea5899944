"""A code app for the child-workflow tests: a code child of a manifest parent, and a
code parent of a manifest child."""

from __future__ import annotations

from typing import Any

from natsflow import start_child, step, workflow

NATSFLOW_APP = "kids"

# The manifests on the other side: a child ``kids_parent`` starts, a parent of ``kids_leaf``.
MANIFEST_LEAF = """
name: manifest-leaf
steps:
  echo:
    action: noop
    with: {got: "${{ input.n }}"}
output: "${{ steps.echo.output }}"
"""
MANIFEST_PARENT = """
name: manifest-parent
steps:
  run:
    action: workflow
    with: {workflow: kids_leaf, input: {n: "${{ input.n }}"}}
output: {child: "${{ steps.run.output }}"}
"""


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
