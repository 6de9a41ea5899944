"""The code workflow of ``bench/steps.py --code``: the same chain as ``chain_manifest``
(``--steps`` sequential steps that do nothing), as ``@workflow`` and ``@step``.

Run by ``natsflow worker --app bench.code_app`` (the app process decides and runs
the steps; the service only answers the admin API).
"""

from __future__ import annotations

from natsflow import step, workflow

NATSFLOW_APP = "bench"
WORKFLOW = "bench-code"


@step
async def tick(i: int) -> int:
    return i


@workflow(name=WORKFLOW)
async def chain(order: dict[str, int]) -> int:
    for i in range(order.get("steps", 10)):
        await tick(i)
    return order.get("steps", 10)
