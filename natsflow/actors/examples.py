"""Python callables the example manifests use (``--python-module natsflow.actors.examples``)."""

from __future__ import annotations

from typing import Any

from natsflow.actors.actions import ActionContext, ActionRegistry
from natsflow.events.errors import RetryableStepError, TerminalStepError


def flaky_third_time(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Fails its first two attempts, succeeds on the third: shows retries with backoff."""
    if ctx.attempt < 3:
        raise RetryableStepError(f"flaky: attempt {ctx.attempt} failed on purpose", kind="flaky")
    return {"attempt": ctx.attempt, "ok": True}


def always_fails(ctx: ActionContext, args: dict[str, Any]) -> None:
    """Fails every attempt: shows a step exhausting its retries."""
    raise RetryableStepError(f"always_fails: attempt {ctx.attempt}", kind="broken")


def fetch_page(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for a paged API: page ``page`` of ``pages``, with a ``has_more`` flag."""
    page, pages = int(args.get("page", 0)), int(args.get("pages", 1))
    return {"page": page, "items": [page * 10 + i for i in range(3)], "has_more": page + 1 < pages}


# --- the sync orchestrator (manifests/examples/sync-orchestrator.yaml, entity-sync.yaml) ---

# The entity manifest: for each entity, what must be synced before it (``needs``, hard:
# a failed one blocks it), what it merely goes after (``after``, soft: ordering only)
# and how many pages its source has in a full sync. Independent entities (no needs, no
# after) sync in parallel, up to the orchestrator's concurrency.
ENTITIES: tuple[dict[str, Any], ...] = (
    {"name": "campus", "needs": [], "after": [], "pages": 2},
    {"name": "household", "needs": ["campus"], "after": [], "pages": 3},
    {"name": "person", "needs": ["household"], "after": ["tag"], "pages": 3},
    {"name": "address", "needs": ["household"], "after": [], "pages": 2},
    {"name": "tag", "needs": [], "after": [], "pages": 1},
    {"name": "note", "needs": [], "after": ["household", "person"], "pages": 2},
)
SYNC_TYPES = ("full", "incremental")  # incremental: one page per entity
PAGE_SIZE = 3  # records per page of the stand-in source


def load_entities(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """The entities to sync for the orchestrator's input (``args``): ``sync_type``, and
    the optional ``fail`` (entities whose source fails on purpose) and ``pages`` (every
    entity's page count instead of the manifest's)."""
    sync_type = args.get("sync_type")
    if sync_type not in SYNC_TYPES:
        raise TerminalStepError(
            f"load_entities: unknown sync_type {sync_type!r} (expected one of: "
            f"{', '.join(SYNC_TYPES)})",
            kind="bad_input",
        )
    names = [entity["name"] for entity in ENTITIES]
    failing = list(args.get("fail") or ())
    unknown = [name for name in failing if name not in names]
    if unknown:
        raise TerminalStepError(
            f"load_entities: fail names unknown entities {unknown} (known: {', '.join(names)})",
            kind="bad_input",
        )
    pages = args.get("pages")
    entities = [
        {
            **entity,
            "pages": int(pages) if pages else (entity["pages"] if sync_type == "full" else 1),
            "fail": entity["name"] in failing,
        }
        for entity in ENTITIES
    ]
    return {"sync_type": sync_type, "entities": entities}


def fetch_entity_page(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for one entity's paged source API: page ``page`` of ``source.pages``
    with ``has_more``, and the running count of records from ``previous`` (the last
    page's output). With ``source.fail`` its second page (or its only one) fails."""
    source = args["source"]
    entity, pages, page = str(source["entity"]), int(source["pages"]), int(args["page"])
    if source.get("fail") and page == min(1, pages - 1):
        raise RetryableStepError(
            f"{entity}: the source failed on page {page} of {pages} (asked to by the input)",
            kind="source_failed",
        )
    records = [f"{entity}-{page * PAGE_SIZE + i}" for i in range(PAGE_SIZE)]
    previous = args.get("previous") or {}
    return {
        "entity": entity,
        "page": page,
        "pages_read": page + 1,
        "records": records,
        "records_so_far": int(previous.get("records_so_far", 0)) + len(records),
        "has_more": page + 1 < pages,
    }


def register(registry: ActionRegistry) -> None:
    registry.register_python("flaky_third_time", flaky_third_time)
    registry.register_python("always_fails", always_fails)
    registry.register_python("fetch_page", fetch_page)
    registry.register_python("load_entities", load_entities)
    registry.register_python("fetch_entity_page", fetch_entity_page)
