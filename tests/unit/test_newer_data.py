"""Rolling upgrades: what a newer natsflow wrote, an older one reads.

A newer version may add a field to anything persisted: events, snapshots,
summaries, inbox and task messages, stored definitions. ``with_unknown_fields``
adds one to every struct inside a value (guided by its type), as such a
writer would; decoding must give what it gives without them. Manifests, on the
other hand, still refuse an unknown field, naming its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsflow.actors.jetstream.definitions import decode_deployed
from natsflow.events.codec import STATE_SCHEMA_VERSION, decode_batch, decode_snapshot
from natsflow.events.errors import ManifestError
from natsflow.events.fold import fold
from natsflow.events.messages import (
    AnyInbox,
    Cancel,
    ErrorInfo,
    Progress,
    Result,
    Start,
    Task,
    TimerDue,
    inbox_decoder,
    task_decoder,
)
from natsflow.events.model import AnyEvent, ExecutionState
from natsflow.events.views import ExecutionSummary, summary_of
from natsflow.manifests.loader import load_manifest, parse_manifest
from natsflow.manifests.schema import StoredDefinition, Workflow
from tests.unit.strategies import any_event, dag_workflows, simulated_runs

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
ADDED = "added_later"
_msgpack = msgspec.msgpack.Encoder()


def with_unknown_fields(tp: Any, value: Any) -> Any:
    """``value`` (plain data of type ``tp``) with a field ``added_later`` in every struct."""
    return _add(mi.type_info(tp), value)


def _add(info: mi.Type, value: Any) -> Any:
    match info:
        case mi.StructType(fields=fields) if isinstance(value, dict):
            out = dict(value)
            for f in fields:
                if f.encode_name in out:
                    out[f.encode_name] = _add(f.type, out[f.encode_name])
            out[ADDED] = {"by": "a newer natsflow", "list": [1, 2]}
            return out
        case mi.UnionType(types=members) if isinstance(value, dict):
            structs = [m for m in members if isinstance(m, mi.StructType)]
            for member in structs:  # a tagged union: the member whose tag the value carries
                if member.tag_field is not None and value.get(member.tag_field) == member.tag:
                    return _add(member, value)
            return _add(structs[0], value) if len(structs) == 1 else value
        case mi.DictType(value_type=item) if isinstance(value, dict):
            return {k: _add(item, v) for k, v in value.items()}
        case mi.ListType(item_type=item) | mi.VarTupleType(item_type=item) if isinstance(
            value, list
        ):
            return [_add(item, v) for v in value]
    return value


def test_the_helper_reaches_nested_structs() -> None:
    plain = msgspec.to_builtins(
        Result(step="a", attempt=1, ok=False, error=ErrorInfo(message="boom"))
    )
    added = with_unknown_fields(AnyInbox, plain)
    assert ADDED in added
    assert ADDED in added["error"]


# --- events, snapshots, summaries ----------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(any_event(), min_size=1, max_size=8))
def test_events_with_unknown_fields_decode(events: list[AnyEvent]) -> None:
    plain = [with_unknown_fields(AnyEvent, msgspec.to_builtins(e)) for e in events]
    data = _msgpack.encode({"events": plain, ADDED: True})
    assert decode_batch(data) == tuple(events)


def _snapshot_of(state: dict[str, Any], covers: int) -> bytes:
    """A snapshot envelope with a field of its own added, around ``state``."""
    raw = msgspec.Raw(_msgpack.encode(state))
    envelope = {"schema": STATE_SCHEMA_VERSION, "covers": covers, "state": raw, ADDED: 1}
    return _msgpack.encode(envelope)


@settings(max_examples=60, deadline=None)
@given(simulated_runs())
def test_snapshots_and_summaries_with_unknown_fields_decode(run: Any) -> None:
    state = fold(run.history)
    plain = with_unknown_fields(ExecutionState, msgspec.to_builtins(state))
    covers = len(run.history)
    assert decode_snapshot(_snapshot_of(plain, covers), state.execution_id) == (state, covers)

    summary = with_unknown_fields(ExecutionSummary, msgspec.to_builtins(summary_of(state)))
    decoded = msgspec.json.decode(msgspec.json.encode(summary), type=ExecutionSummary)
    assert decoded == summary_of(state)


# --- messages ------------------------------------------------------------------

INBOX: list[AnyInbox] = [
    Start(workflow="wf", version="v1", input={"a": [1]}, idempotency_key="k"),
    Result(step="s", attempt=2, ok=True, output={"x": 1}, iteration=1),
    Result(step="s", attempt=1, ok=False, error=ErrorInfo(message="no", retry_after=1.5)),
    Progress(step="s", attempt=1, message="50%"),
    TimerDue(timer_id="s/retry/0/1", step="s"),
    Cancel(reason="operator"),
]


@pytest.mark.parametrize("message", INBOX, ids=lambda m: type(m).__name__)
def test_inbox_messages_with_unknown_fields_decode(message: AnyInbox) -> None:
    plain = with_unknown_fields(AnyInbox, msgspec.to_builtins(message))
    assert inbox_decoder.decode(msgspec.json.encode(plain)) == message


def test_task_messages_with_unknown_fields_decode() -> None:
    task = Task(
        execution_id="wf-1",
        step="s",
        attempt=1,
        action="shell",
        input={"argv": ["true"]},
        timeout=5.0,
        idempotency_key="wf-1:s:1",
        reply_to="natsflow.in.wf-1",
    )
    plain = with_unknown_fields(Task, msgspec.to_builtins(task))
    assert task_decoder.decode(msgspec.json.encode(plain)) == task


# --- stored definitions, and manifests that stay strict -------------------------


def _deployed(workflow: Workflow) -> StoredDefinition:
    return StoredDefinition(name=workflow.name, version="abc", workflow=workflow, deployed_at=1.0)


def _check_definition(workflow: Workflow) -> None:
    record = _deployed(workflow)
    plain = with_unknown_fields(StoredDefinition, msgspec.to_builtins(record))
    assert decode_deployed(msgspec.json.encode(plain)) == record


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_stored_example_definitions_with_unknown_fields_decode(path: Path) -> None:
    _check_definition(load_manifest(path))


@settings(max_examples=60, deadline=None)
@given(dag_workflows())
def test_stored_definitions_with_unknown_fields_decode(workflow: Workflow) -> None:
    _check_definition(workflow)


def test_a_manifest_with_the_same_unknown_fields_is_refused_by_path() -> None:
    doc = {
        "name": "wf",
        "steps": {
            "a": {
                "action": "noop",
                "retry": {"attempts": 2, ADDED: 1},
                "for_each": {"items": "${{ input }}", ADDED: 1},
                ADDED: 1,
            }
        },
        ADDED: 1,
    }
    with pytest.raises(ManifestError) as refused:
        parse_manifest(msgspec.json.encode(doc), "json")
    unknown = [p.split(":")[0] for p in refused.value.problems if "unknown field" in p]
    assert unknown == [
        f"steps.a.retry.{ADDED}",
        f"steps.a.for_each.{ADDED}",
        f"steps.a.{ADDED}",
        ADDED,
    ]


def test_an_event_type_from_a_newer_version_is_not_a_decode_error() -> None:
    """A batch holding an event type this version does not know is left for a newer
    instance (NewerEvent), not taken for corrupt data (which would park the execution)."""
    from natsflow.events.codec import decode_batch_with_cause
    from natsflow.events.errors import NewerEvent

    batch = msgspec.msgpack.encode(
        {"events": [{"type": "step_teleported", "at": 1.0, "step": "a"}], "cause": 3}
    )
    with pytest.raises(NewerEvent, match="step_teleported"):
        decode_batch_with_cause(batch)
    # Garbage, or a known type with a broken field, is still a decode error.
    with pytest.raises(msgspec.DecodeError):
        decode_batch_with_cause(b"\xc1 not msgpack")
    broken = msgspec.msgpack.encode({"events": [{"type": "execution_started", "at": "x"}]})
    with pytest.raises(msgspec.DecodeError):
        decode_batch_with_cause(broken)
