"""The reply to a trigger published with a ``Natsflow-Reply-To`` header (JSON).

JetStream answers a request published to a subject it captures with its own
publish ack, and does not keep the request's reply subject with the stored
message; so a publisher that wants the execution id names, in this header,
a subject it listens on. Once the message has started its execution (or was
refused and dead-lettered), natsflow publishes a ``TriggerReply`` there.
A message delivered again (after a crash before its ack) is answered again,
with the same execution id.
"""

from __future__ import annotations

import re

import msgspec

REPLY_TO_HEADER = "Natsflow-Reply-To"

# A subject natsflow can publish to: dot-separated tokens, no wildcard, no whitespace.
_SUBJECT = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")


class TriggerReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``execution_id`` (with ``created``: False when its key had started one already)
    when the message started an execution; else ``error`` and the ``dead_letter`` id
    where the message was kept (``natsflow dlq show ID``)."""

    workflow: str
    execution_id: str | None = None
    version: str | None = None
    created: bool | None = None
    error: str | None = None
    dead_letter: int | None = None


def reply_subject(headers: dict[str, str]) -> str | None:
    """The subject a trigger message asks its reply on; None if none, or not a subject
    natsflow can publish to."""
    subject = headers.get(REPLY_TO_HEADER, "").strip()
    return subject if _SUBJECT.fullmatch(subject) else None


reply_decoder = msgspec.json.Decoder(TriggerReply)
