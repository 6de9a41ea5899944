"""Dead letters as data: their headers, their read views, and what a redrive sends.

A dead letter is a message natsflow could not process, kept in the stream
``NATSFLOW_DLQ`` on ``natsflow.dlq.<reason>``; its id is its stream sequence
and its time the stream's timestamp. Its headers say why and where from:

- ``Natsflow-Error``             why it could not be processed (at most 1,000 characters)
- ``Natsflow-Original-Subject``  the subject it came on (where a redrive sends it)
- ``Natsflow-Original-Stream``,  for a copy of a stored message that cannot be decoded
  ``Natsflow-Original-Sequence`` (an event or snapshot that parks its execution): where
                                 the message itself stays
- ``Natsflow-Header-<Name>``     each header the message came with, renamed so that
                                 JetStream does not act on it in the dead-letter stream
                                 (a ``Nats-Msg-Id`` would deduplicate, a ``Nats-TTL``
                                 expire, a ``Nats-Schedule`` fire)

Pure: the JetStream adapter (``natsflow.actors.jetstream.deadletters``) reads
and writes them as ``StoredLetter``; the admin API answers the views below.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

ERROR = "Natsflow-Error"
ORIGINAL_SUBJECT = "Natsflow-Original-Subject"
ORIGINAL_STREAM = "Natsflow-Original-Stream"
ORIGINAL_SEQUENCE = "Natsflow-Original-Sequence"
HEADER_PREFIX = "Natsflow-Header-"
"""An original header ``Name`` is kept as ``Natsflow-Header-Name``."""

MAX_ERROR = 1000
"""How much of an error a dead letter keeps."""
PREVIEW_BYTES = 64 * 1024
"""How much of a payload that is not JSON ``show`` returns (as text, or base64)."""
REDRIVE_MSG_ID = "natsflow-redrive:{id}"
"""The ``Nats-Msg-Id`` of a redriven message: redriving the same dead letter twice (the
delete after the publish was lost) stores it once, while a new id per dead letter gets
past the duplicate window that still remembers the original's own ``Nats-Msg-Id``."""

PayloadFormat = Literal["json", "text", "binary", "empty"]


class StoredLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter as the stream holds it: sequence, reason (from its subject), headers,
    payload and stream time (seconds since the epoch)."""

    seq: int
    reason: str
    headers: dict[str, str]
    data: bytes
    at: float


class DeadLetterRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``dlq ls``: ``subject`` is where the message came from; ``redrivable``
    says whether ``dlq redrive`` can send it back there."""

    id: int
    reason: str
    subject: str
    at: float
    error: str
    size: int
    redrivable: bool


class DeadLetters(msgspec.Struct, frozen=True, kw_only=True):
    """``dlq ls``: the dead letters after ``after``, oldest first, and how many match."""

    total: int
    dead_letters: tuple[DeadLetterRow, ...]


class DeadLetterView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``dlq show``: everything about one dead letter.

    ``headers`` are the dead letter's own (``Natsflow-*``), ``original_headers`` those
    the message came with. ``payload`` is the decoded JSON value (``payload_format``
    ``json``), the text (``text``), or base64 (``binary``); a text or binary payload is
    cut at ``PREVIEW_BYTES`` (``truncated``). ``not_redrivable`` says why ``dlq redrive``
    refuses it.
    """

    id: int
    reason: str
    subject: str
    at: float
    error: str
    size: int
    headers: dict[str, str]
    original_headers: dict[str, str]
    payload_format: PayloadFormat
    payload: Any = None
    truncated: bool = False
    not_redrivable: str | None = None


class RedrivenLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter sent back: ``seq`` is where its stream stored it."""

    id: int
    subject: str
    stream: str
    seq: int


class SkippedLetter(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    reason: str


MAX_LISTED = 1000
"""``dlq redrive --all`` lists at most this many of the letters it redrove (and skipped);
its counts say how many there were."""


class Redriven(msgspec.Struct, frozen=True, kw_only=True):
    """``dlq redrive``: the dead letters sent back (and deleted), and those left where they
    are with the reason; each list holds at most ``MAX_LISTED``, the counts say all."""

    redriven: tuple[RedrivenLetter, ...]
    skipped: tuple[SkippedLetter, ...] = ()
    redriven_count: int = 0
    skipped_count: int = 0


class Purged(msgspec.Struct, frozen=True, kw_only=True):
    """``dlq purge``: how many dead letters were deleted."""

    purged: int


def letter_headers(
    error: str, subject: str, original: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers of a dead letter for a message that came on ``subject`` with headers
    ``original`` (kept renamed, see the module's docstring)."""
    headers = {f"{HEADER_PREFIX}{name}": value for name, value in (original or {}).items()}
    # A header value cannot hold a line break (it would end the header).
    headers[ERROR] = " | ".join(error[:MAX_ERROR].splitlines())
    headers[ORIGINAL_SUBJECT] = subject
    return headers


def original_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers the message came with."""
    return {
        name[len(HEADER_PREFIX) :]: value
        for name, value in headers.items()
        if name.startswith(HEADER_PREFIX)
    }


def own_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The dead letter's own headers (why, where from), without the original ones."""
    return {k: v for k, v in headers.items() if not k.startswith(HEADER_PREFIX)}


def redrive_headers(letter: StoredLetter) -> dict[str, str]:
    """The headers a redrive sends: the original ones, except those JetStream acts on
    (``Nats-*``: they held at the first publish, not now), with a ``Nats-Msg-Id`` of
    its own (``REDRIVE_MSG_ID``)."""
    headers = {
        name: value
        for name, value in original_headers(letter.headers).items()
        if not name.lower().startswith("nats-")
    }
    headers["Nats-Msg-Id"] = REDRIVE_MSG_ID.format(id=letter.seq)
    return headers


def not_redrivable(letter: StoredLetter) -> str | None:
    """Why ``letter`` cannot be sent back where it came from; None if it can."""
    headers = letter.headers
    stream = headers.get(ORIGINAL_STREAM)
    if stream is not None:
        where = f"{stream} sequence {headers.get(ORIGINAL_SEQUENCE, '?')}"
        return (
            f"dead letter {letter.seq} is a copy of the undecodable {letter.reason} stored at"
            f" {where}, which stays there and parks its execution: sending the copy again"
            " would not unpark it (see `natsflow show` of the execution); purge it once"
            " handled"
        )
    subject = headers.get(ORIGINAL_SUBJECT)
    if not subject:
        return f"dead letter {letter.seq} does not say which subject it came on"
    if subject.startswith("natsflow.dlq."):
        return f"dead letter {letter.seq} came on {subject}, the dead letters themselves"
    return None


def row_of(letter: StoredLetter) -> DeadLetterRow:
    headers = letter.headers
    return DeadLetterRow(
        id=letter.seq,
        reason=letter.reason,
        subject=headers.get(ORIGINAL_SUBJECT, ""),
        at=letter.at,
        error=headers.get(ERROR, ""),
        size=len(letter.data),
        redrivable=not_redrivable(letter) is None,
    )


def view_of(letter: StoredLetter) -> DeadLetterView:
    row = row_of(letter)
    payload_format, payload, truncated = preview(letter.data)
    return DeadLetterView(
        id=row.id,
        reason=row.reason,
        subject=row.subject,
        at=row.at,
        error=row.error,
        size=row.size,
        headers=own_headers(letter.headers),
        original_headers=original_headers(letter.headers),
        payload_format=payload_format,
        payload=payload,
        truncated=truncated,
        not_redrivable=not_redrivable(letter),
    )


def preview(data: bytes) -> tuple[PayloadFormat, Any, bool]:
    """A payload as ``show`` gives it: (format, value, truncated)."""
    if not data:
        return "empty", None, False
    try:
        return "json", msgspec.json.decode(data), False
    except msgspec.DecodeError:
        pass
    cut = data[:PREVIEW_BYTES]
    truncated = len(data) > PREVIEW_BYTES
    text = _text(cut, truncated)
    if text is not None:
        return "text", text, truncated
    return "binary", base64.b64encode(cut).decode(), truncated


def _text(cut: bytes, truncated: bool) -> str | None:
    """``cut`` as text if it is UTF-8 without control characters (but tabs and newlines)."""
    # A cut may split a multi-byte character: up to 3 bytes less is the same text.
    for end in range(len(cut), len(cut) - 4, -1) if truncated else (len(cut),):
        try:
            text = cut[:end].decode()
        except UnicodeDecodeError:
            continue
        return text if all(c.isprintable() or c in "\t\n\r" for c in text) else None
    return None
