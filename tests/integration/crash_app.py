"""A code app for the crash test: 20 steps in a chain, each appending to a file.

A step appends ``start s<i> <pid>`` when it begins and ``done s<i>`` when it ends,
to the file the execution's input names: the file is the side effect counted by
``test_code_crash``. It runs in a ``natsflow worker --app`` subprocess.
"""

from __future__ import annotations

import os

import anyio

from natsflow import step, workflow

NATSFLOW_APP = "crash"
STEPS = 20


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:  # one short write: whole lines even across a kill
        f.write(line + "\n")


@step
async def mark(path: str, index: int) -> int:
    _append(path, f"start s{index} {os.getpid()}")
    await anyio.sleep(0.03)  # long enough for a kill to land inside a step
    _append(path, f"done s{index}")
    return index


@workflow(name="crash_chain")
async def chain(order: dict[str, str]) -> int:
    total = 0
    for index in range(STEPS):
        total += await mark(order["path"], index)
    return total
