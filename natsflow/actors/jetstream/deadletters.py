"""The dead-letter stream ``NATSFLOW_DLQ``: read, delete, purge, and send back.

A dead letter's id is its stream sequence. Reads go one message at a time
(``STREAM.MSG.GET`` with ``next_by_subj``), so a listing holds at most its
page in memory, however large the payloads. NATS's errors become
``Unavailable`` (no answer) or ``NotFound`` (no such dead letter) here; what a
dead letter's headers mean, and which cannot be redriven, is
``natsflow.events.deadletters``.
"""

from __future__ import annotations

import datetime as dt

import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from natsflow.actors.jetstream.errors import unavailable, unavailable_as
from natsflow.actors.jetstream.publisher import Publisher, PublishError
from natsflow.actors.jetstream.topology import DLQ_STREAM, dlq_subject
from natsflow.events.deadletters import (
    ORIGINAL_SUBJECT,
    RedrivenLetter,
    StoredLetter,
    redrive_headers,
)
from natsflow.events.errors import Conflict, NotFound

READ_TIMEOUT = 10.0
NO_MESSAGE_FOUND = 10057  # a delete of a sequence the stream does not hold (any more)
_PREFIX = dlq_subject("")


def dlq_filter(reason: str | None) -> str:
    """The subjects of the dead letters of ``reason`` (None: all of them)."""
    return dlq_subject(reason or ">")


class DeadLetterStore:
    """The dead letters, as ``StoredLetter``s; redrives publish through ``publisher``."""

    def __init__(self, nc: Client, js: JetStreamContext, publisher: Publisher) -> None:
        self._nc = nc
        self._js = js
        self._publisher = publisher

    async def count(self, reason: str | None = None) -> int:
        """How many dead letters there are (of ``reason``)."""
        with unavailable_as(f"read the state of {DLQ_STREAM}"):
            if reason is None:
                info = await self._js.stream_info(DLQ_STREAM)
                return info.state.messages
            info = await self._js.stream_info(DLQ_STREAM, subjects_filter=dlq_filter(reason))
        return sum((info.state.subjects or {}).values())

    async def last_id(self) -> int:
        """The id of the newest dead letter there has been (0: none yet)."""
        with unavailable_as(f"read the state of {DLQ_STREAM}"):
            info = await self._js.stream_info(DLQ_STREAM)
        return info.state.last_seq

    async def scan(
        self, *, reason: str | None = None, after: int = 0, limit: int
    ) -> list[StoredLetter]:
        """Up to ``limit`` dead letters (of ``reason``) with ids above ``after``, oldest first."""
        out: list[StoredLetter] = []
        seq = after + 1
        while len(out) < limit:
            letter = await self._next(seq, dlq_filter(reason))
            if letter is None:
                break
            out.append(letter)
            seq = letter.seq + 1
        return out

    async def get(self, seq: int) -> StoredLetter:
        """Dead letter ``seq``; ``NotFound`` if there is none."""
        with unavailable_as(f"read dead letter {seq} from {DLQ_STREAM}"):
            try:
                raw = await self._js.get_msg(DLQ_STREAM, seq)
            except NotFoundError:
                raise NotFound(f"dead letter {seq} not found in {DLQ_STREAM}") from None
        return _stored(raw)

    async def delete(self, seq: int) -> bool:
        """Delete dead letter ``seq``; False if it was not there (any more)."""
        with unavailable_as(f"delete dead letter {seq} from {DLQ_STREAM}"):
            try:
                return await self._js.delete_msg(DLQ_STREAM, seq)
            except NotFoundError:
                return False
            except APIError as exc:
                if exc.err_code == NO_MESSAGE_FOUND:
                    return False
                raise

    async def purge(self, reason: str | None = None) -> int:
        """Delete every dead letter (of ``reason``); how many went."""
        what = f"purge {DLQ_STREAM}"
        body = orjson.dumps({"filter": dlq_filter(reason)})
        with unavailable_as(what):
            reply = await self._nc.request(
                f"$JS.API.STREAM.PURGE.{DLQ_STREAM}", body, timeout=READ_TIMEOUT
            )
        answer = orjson.loads(reply.data)
        if "error" in answer:
            raise unavailable(what, str(answer["error"].get("description", answer["error"])))
        purged: int = answer.get("purged", 0)
        return purged

    async def redrive(self, letter: StoredLetter, payload: bytes) -> RedrivenLetter:
        """Publish ``payload`` to the subject ``letter`` came on, with its original headers
        (``redrive_headers``), then delete it. ``Conflict`` if no stream stores that subject
        any more, or the stream refuses the message (the dead letter then stays)."""
        subject = letter.headers.get(ORIGINAL_SUBJECT, "")
        with unavailable_as(f"find the stream of {subject}"):
            try:
                stream = await self._js.find_stream_name_by_subject(subject)
            except NotFoundError:
                raise Conflict(
                    f"dead letter {letter.seq}: no stream stores {subject} any more (a trigger"
                    " removed?); it stays in the dead letters"
                ) from None
        try:
            seq = await self._publisher.publish(subject, payload, redrive_headers(letter))
        except PublishError as exc:
            raise Conflict(
                f"dead letter {letter.seq}: {exc}; it stays in the dead letters"
            ) from None
        await self.delete(letter.seq)
        return RedrivenLetter(id=letter.seq, subject=subject, stream=stream, seq=seq)

    async def _next(self, seq: int, subjects: str) -> StoredLetter | None:
        with unavailable_as(f"read the dead letters from {DLQ_STREAM}"):
            try:
                raw = await self._js.get_msg(DLQ_STREAM, seq, subject=subjects, next=True)
            except NotFoundError:
                return None
        return _stored(raw)


def _stored(raw: api.RawStreamMsg) -> StoredLetter:
    subject = raw.subject or ""
    return StoredLetter(
        seq=raw.seq or 0,
        reason=subject.removeprefix(_PREFIX),
        headers={str(k): str(v) for k, v in (raw.headers or {}).items()},
        data=raw.data or b"",
        at=_epoch(raw.time),
    )


def _epoch(value: dt.datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0
