"""Which ``Natsflow-Reply-To`` values are subjects natsflow answers on."""

from __future__ import annotations

import msgspec
import pytest

from natsflow.events.replies import TriggerReply, reply_decoder, reply_subject


@pytest.mark.parametrize("value", ["_INBOX.abc.1", "replies", "a.b-c_d.e1", " spaced.ok "])
def test_a_publishable_subject_is_answered(value: str) -> None:
    assert reply_subject({"Natsflow-Reply-To": value}) == value.strip()


@pytest.mark.parametrize("value", ["", "a.*", "a.>", "a..b", ".a", "a.", "a b", "a\tb"])
def test_anything_else_is_not(value: str) -> None:
    assert reply_subject({"Natsflow-Reply-To": value}) is None


def test_no_header_no_subject() -> None:
    assert reply_subject({}) is None


def test_a_reply_carries_only_what_applies() -> None:
    started = TriggerReply(workflow="w", execution_id="w-1", version="v", created=True)
    assert msgspec.json.decode(msgspec.json.encode(started)) == {
        "workflow": "w",
        "execution_id": "w-1",
        "version": "v",
        "created": True,
    }
    refused = TriggerReply(workflow="w", error="bad", dead_letter=7)
    assert reply_decoder.decode(msgspec.json.encode(refused)) == refused
