"""A code app for the integration tests: three steps, a durable sleep, a signal wait."""

from __future__ import annotations

import msgspec

from natsflow import logger, sleep, step, wait_for_signal, workflow

NATSFLOW_APP = "itest"
RUNS: list[str] = []  # each step run, in this process: a finished step never runs again


class Doc(msgspec.Struct, frozen=True):
    name: str
    words: int


@step(retry=2)
async def fetch(name: str) -> Doc:
    RUNS.append(f"fetch {name}")
    return Doc(name=name, words=len(name))


@step
def count(doc: Doc) -> int:
    RUNS.append(f"count {doc.name}")
    return doc.words * 2


@step
async def publish(doc: Doc, total: int, approver: str) -> str:
    RUNS.append(f"publish {doc.name}")
    return f"{doc.name}:{total}:{approver}"


@workflow(name="itest_docs", idempotency_key="${{ input.name }}")
async def docs(order: dict[str, str]) -> dict[str, str]:
    doc = await fetch(order["name"])
    total = await count(doc)
    logger.info("counted %s", total)
    await sleep(0.2)
    approval = await wait_for_signal("approve", timeout=60)
    return {"published": await publish(doc, total, approval["by"])}
