"""The Python callables of the sync orchestrator example (``natsflow.actors.examples``)."""

from __future__ import annotations

from typing import Any

import pytest

from natsflow.actors.actions import ActionContext
from natsflow.actors.examples import ENTITIES, fetch_entity_page, load_entities
from natsflow.events.errors import RetryableStepError, TerminalStepError


async def _ignore(text: str) -> None:
    pass


CTX = ActionContext(
    execution_id="sync-1", step="load", attempt=1, idempotency_key="k", report_progress=_ignore
)


def test_the_entity_manifest_is_a_dag_of_known_entities() -> None:
    names = [entity["name"] for entity in ENTITIES]
    assert len(set(names)) == len(names)
    deps = {e["name"]: set(e["needs"]) | set(e["after"]) for e in ENTITIES}
    assert set().union(*deps.values()) <= set(names)
    done: set[str] = set()
    while len(done) < len(names):  # a topological order exists: no cycle
        ready = {name for name in names if name not in done and deps[name] <= done}
        assert ready, f"a cycle among {sorted(set(names) - done)}"
        done |= ready
    assert {"campus", "household", "person", "address"} <= set(names)
    assert [name for name in names if not deps[name]] == ["campus", "tag"]


def test_load_entities_by_sync_type() -> None:
    full = load_entities(CTX, {"organisation": "acme", "sync_type": "full"})["entities"]
    assert [e["pages"] for e in full] == [e["pages"] for e in ENTITIES]
    assert not any(e["fail"] for e in full)
    incremental = load_entities(CTX, {"sync_type": "incremental", "fail": ["household"]})
    assert {e["pages"] for e in incremental["entities"]} == {1}
    assert [e["name"] for e in incremental["entities"] if e["fail"]] == ["household"]
    assert {
        e["pages"] for e in load_entities(CTX, {"sync_type": "full", "pages": 7})["entities"]
    } == {7}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"sync_type": "weekly"}, "unknown sync_type 'weekly'"),
        ({"sync_type": "full", "fail": ["ghost"]}, "unknown entities ['ghost']"),
    ],
)
def test_load_entities_names_what_is_wrong(args: dict[str, Any], named: str) -> None:
    with pytest.raises(TerminalStepError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_entities(CTX, args)


def test_fetch_entity_page_counts_records_until_the_last_page() -> None:
    source = {"organisation": "acme", "entity": "person", "pages": 3}
    previous: Any = None
    for page in range(3):
        previous = fetch_entity_page(CTX, {"source": source, "page": page, "previous": previous})
    assert previous["has_more"] is False
    assert (previous["pages_read"], previous["records_so_far"]) == (3, 9)


def test_fetch_entity_page_fails_when_asked() -> None:
    source = {"organisation": "acme", "entity": "household", "pages": 3, "fail": True}
    first = fetch_entity_page(CTX, {"source": source, "page": 0, "previous": None})
    assert first["has_more"] is True  # the first page reads; the second fails
    with pytest.raises(RetryableStepError, match="household: the source failed on page 1 of 3"):
        fetch_entity_page(CTX, {"source": source, "page": 1, "previous": first})
