"""The shipped JSON Schemas: equal to what the structs generate, and true of what we send."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings

from natsflow.events.feed import feed_messages, feed_subject
from natsflow.events.messages import CancelNotice, ErrorInfo, Progress, Result, Task
from natsflow.events.model import AnyEvent
from natsflow.events.refusals import INVALID_RESULT, Refusal, salvage_result
from natsflow.events.replies import TriggerReply
from natsflow.service.cli import main
from natsflow.service.contract import MESSAGES, SCHEMAS_DIR, render, shipped
from natsflow.service.protocol import SignalRequest
from tests.contract import check, problems
from tests.unit.strategies import event_batches


@pytest.mark.parametrize("name", list(MESSAGES))
def test_the_shipped_file_is_what_the_structs_generate(name: str) -> None:
    assert shipped(name) == render(name), "stale schema: run `make schemas`"


def test_every_shipped_file_is_a_known_message() -> None:
    assert sorted(p.stem for p in SCHEMAS_DIR.glob("*.json")) == sorted(MESSAGES)


ENCODE = msgspec.json.encode

SENT = [
    (
        "task",
        Task(
            execution_id="hello-1",
            step="greet",
            attempt=1,
            action="billing.charge",
            input={"amount": 3},
            timeout=5.0,
            idempotency_key="hello-1:greet:1",
            reply_to="natsflow.in.hello-1",
        ),
    ),
    ("result", Result(step="greet", attempt=1, ok=True, output={"x": 1})),
    (
        "result",
        Result(step="greet", attempt=2, ok=False, error=ErrorInfo(message="no", retry_after=1)),
    ),
    ("progress", Progress(step="greet", attempt=1, message="50%", iteration=2)),
    ("trigger-reply", TriggerReply(workflow="w", execution_id="w-1", version="v", created=True)),
    ("trigger-reply", TriggerReply(workflow="w", error="bad input", dead_letter=3)),
    ("cancel-notice", CancelNotice(execution_id="w-1", steps=("a",), reason="operator")),
    ("signal", SignalRequest(execution_id="w-1", name="approve", data={"by": "ada"}, id="s1")),
    ("refusal", Refusal(execution_id="w-1", error="at `$.ok`", outcome="dead_lettered")),
]


@pytest.mark.parametrize(("name", "message"), SENT, ids=[n for n, _ in SENT])
def test_what_natsflow_encodes_matches_its_schema(name: str, message: msgspec.Struct) -> None:
    check(name, ENCODE(message))


@settings(max_examples=50)
@given(event_batches(max_size=8))
def test_every_event_on_the_feed_matches_the_feed_schema(events: tuple[AnyEvent, ...]) -> None:
    for subject, body in feed_messages("billing", "billing-7", 12, events):
        message = check("feed", body)
        assert subject == feed_subject("billing", "billing-7", message["event"]["type"])


@pytest.mark.parametrize(
    ("name", "message", "where"),
    [
        ("result", {"kind": "result", "step": "s", "attempt": 1}, "'ok' is a required"),
        ("result", {"kind": "result", "step": "s", "attempt": 0, "ok": True}, "$.attempt"),
        ("result", {"kind": "result", "step": "s", "attempt": 1, "ok": 1}, "$.ok"),
        ("result", {"kind": "result", "step": "s", "attempt": 1, "ok": False, "error": "x"}, "$.error"),
        ("task", {"execution_id": "e", "step": "s", "attempt": 1, "action": "a",
                  "idempotency_key": "k", "reply_to": "natsflow.in.*"}, "$.reply_to"),
        ("trigger-reply", {"workflow": "w"}, "$"),
    ],
)  # fmt: skip
def test_a_broken_message_is_refused_naming_the_field(
    name: str, message: dict[str, object], where: str
) -> None:
    found = problems(name, message)
    assert found
    assert any(where in p for p in found), found


def test_a_result_naming_its_attempt_becomes_that_attempts_failure() -> None:
    body = b'{"kind": "result", "step": "charge", "attempt": 2, "iteration": 1, "error": "x"}'
    failed = salvage_result(body, "Object missing required field `ok`")
    assert failed is not None
    assert (failed.step, failed.attempt, failed.iteration, failed.ok) == ("charge", 2, 1, False)
    assert failed.error is not None
    assert failed.error.kind == INVALID_RESULT
    assert failed.error.retryable
    assert "`ok`" in failed.error.message


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"kind": "progress", "step": "s", "attempt": 1}',
        b'{"kind": "result", "attempt": 1, "ok": true}',
        b'{"kind": "result", "step": "s", "attempt": "one", "ok": true}',
        b'{"kind": "result", "step": "s", "attempt": true, "ok": true}',
        b'{"kind": "result", "step": "s", "attempt": 0, "ok": true}',
        b'{"kind": "result", "step": "s", "attempt": 1, "iteration": -1, "ok": true}',
    ],
)
def test_one_that_does_not_is_not_salvaged(body: bytes) -> None:
    assert salvage_result(body, "problem") is None


def test_the_cli_lists_and_prints_the_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    main(["schema"])
    listed = capsys.readouterr().out
    assert [line.split()[0] for line in listed.splitlines()] == list(MESSAGES)
    main(["schema", "result"])
    assert json.loads(capsys.readouterr().out)["$id"] == "urn:natsflow:schema:result"
    with pytest.raises(SystemExit) as exit:
        main(["schema", "bogus"])
    assert exit.value.code == 2
    assert "no schema named 'bogus'" in capsys.readouterr().err
