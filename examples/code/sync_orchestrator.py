"""The sync orchestrator as code: an entity manifest, then one ``entity_sync`` child
workflow per entity in dependency order, each paging through its source with durable
sleeps between pages (the manifest version: ``manifests/examples/sync-orchestrator.yaml``).

    natsflow worker --app examples.code.sync_orchestrator   # from the repository's root
    natsflow start sync_orchestrator --wait \\
        --input '{"organisation": "acme", "sync_type": "full"}'

- ``load_entities`` reads the entity manifest of ``natsflow.actors.examples``
  (campus, household, person, address, tag, note: each entity's hard ``needs``,
  soft ``after`` and page count) for the input's ``sync_type``.
- The orchestrator starts, in waves, every entity whose ``needs`` have completed
  and whose ``after`` have ended however they ended, at most ``concurrency`` at a
  time (a ``gather`` of child workflows with ``return_exceptions=True``). An entity
  whose hard dependency failed (or was itself blocked) is blocked: its child never
  starts. At the end, if any entity failed or was blocked, the execution fails
  naming them; otherwise its output maps each entity to its child's output.
- ``entity_sync`` fetches page after page (``fetch_page``, retried with backoff)
  with a durable ``sleep(pause)`` between pages, until ``has_more`` is false.
- The idempotency key is organisation and sync type: a second start of the same
  sync answers with the first one's execution.
"""

from __future__ import annotations

from typing import Any

import msgspec

from natsflow import StepFailed, gather, logger, sleep, step, workflow
from natsflow.actors import examples
from natsflow.manifests.schema import RetryPolicy

NATSFLOW_APP = "sync"
CONCURRENCY = 3  # children running at once, as the manifest's for_each


class Entity(msgspec.Struct, frozen=True):
    """One entity of the manifest, as loaded for a sync."""

    name: str
    needs: list[str]
    after: list[str]
    pages: int
    fail: bool = False


class EntityJob(msgspec.Struct, frozen=True):
    """The input of one ``entity_sync`` child."""

    organisation: str
    entity: str
    pages: int
    fail: bool = False
    pause: float = 0.2


class SyncOrder(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The orchestrator's input (``fail``, ``pages``, ``pause``: to try things out)."""

    organisation: str
    sync_type: str
    fail: list[str] = []
    pages: int | None = None
    pause: float = 0.2


INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["organisation", "sync_type"],
    "additionalProperties": False,
    "properties": {
        "organisation": {"type": "string", "minLength": 1},
        "sync_type": {"enum": list(examples.SYNC_TYPES)},
        "fail": {"type": "array", "items": {"enum": [e["name"] for e in examples.ENTITIES]}},
        "pages": {"type": "integer", "minimum": 1},
        "pause": {"type": "number", "minimum": 0},
    },
}


@step
def load_entities(sync_type: str, fail: list[str], pages: int | None) -> list[Entity]:
    """The entity manifest for this sync (the manifest example's ``load_entities``)."""
    args = {"sync_type": sync_type, "fail": fail, "pages": pages}
    loaded = examples.load_entities(None, args)  # type: ignore[arg-type]  # needs no context
    return msgspec.convert(loaded["entities"], list[Entity])


@step(retry=RetryPolicy(attempts=3, backoff="exponential", delay=0.2))
def fetch_page(job: EntityJob, page: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    """One page of the entity's source (the manifest example's stand-in paged API)."""
    source = {"entity": job.entity, "pages": job.pages, "fail": job.fail}
    args = {"source": source, "page": page, "previous": previous}
    return examples.fetch_entity_page(None, args)  # type: ignore[arg-type]


@workflow(name="entity_sync", description="Page through one entity's source.")
async def entity_sync(job: EntityJob) -> dict[str, Any]:
    """Fetch pages until ``has_more`` is false, with a durable sleep between pages."""
    page, last = 0, await fetch_page(job, 0, None)
    while last["has_more"]:
        await sleep(job.pause)
        page += 1
        last = await fetch_page(job, page, last)
    return {
        "organisation": job.organisation,
        "entity": job.entity,
        "pages": last["pages_read"],
        "records": last["records_so_far"],
    }


class SyncFailed(Exception):
    """Some entities failed or were blocked: the execution fails with this message."""


def ready(entity: Entity, outcomes: dict[str, str]) -> bool:
    """Whether ``entity`` may start: every dependency, hard or soft, has an outcome."""
    return all(name in outcomes for name in (*entity.needs, *entity.after))


@workflow(
    name="sync_orchestrator",
    idempotency_key="${{ input.organisation }}:${{ input.sync_type }}",
    input=INPUT_SCHEMA,
    description="Sync an organisation's entities as child workflows, in dependency order.",
)
async def sync_orchestrator(order: SyncOrder) -> dict[str, Any]:
    """Sync every entity of the manifest, dependencies first (see the module docstring)."""
    entities = await load_entities(order.sync_type, order.fail, order.pages)
    outcomes: dict[str, str] = {}  # entity -> completed | failed: ... | blocked: ...
    outputs: dict[str, Any] = {}
    pending = list(entities)
    while pending:
        wave = [e for e in pending if ready(e, outcomes)]
        if not wave:
            raise ValueError(f"the entity manifest has a cycle among {[e.name for e in pending]}")
        pending = [e for e in pending if e not in wave]
        runnable = []
        for entity in wave:
            broken = [n for n in entity.needs if outcomes[n] != "completed"]
            if broken:
                outcomes[entity.name] = f"blocked: {', '.join(broken)} did not complete"
            else:
                runnable.append(entity)
        for start in range(0, len(runnable), CONCURRENCY):
            batch = runnable[start : start + CONCURRENCY]
            jobs = [
                EntityJob(order.organisation, e.name, e.pages, e.fail, order.pause) for e in batch
            ]
            results = await gather(*(entity_sync(job) for job in jobs), return_exceptions=True)
            for entity, result in zip(batch, results, strict=True):
                if isinstance(result, StepFailed):
                    outcomes[entity.name] = f"failed: {result.error}"
                else:
                    outcomes[entity.name], outputs[entity.name] = "completed", result
    logger.info("synced %d of %d entities", len(outputs), len(entities))
    bad = {name: outcome for name, outcome in outcomes.items() if outcome != "completed"}
    if bad:
        listed = "; ".join(f"{name} {outcome}" for name, outcome in bad.items())
        raise SyncFailed(f"{len(bad)} of {len(entities)} entities did not sync: {listed}")
    return {"organisation": order.organisation, "sync_type": order.sync_type, "entities": outputs}
