"""The dead-letter verbs of the admin API: ``dlq.ls``, ``dlq.show``, ``dlq.redrive``, ``dlq.purge``.

Reads and writes go through the adapter (``actors.jetstream.deadletters``);
what a dead letter says and whether it can be redriven is
``events.deadletters``. A redrive sends the original payload (or the request's
``input``, JSON-encoded, in its place) to the subject the message came on, with
its original headers, then deletes the dead letter; one that cannot be
redriven (a copy of an undecodable event or snapshot: the message itself stays
in its stream) is refused by id with ``Conflict`` and skipped by ``all``.
"""

from __future__ import annotations

import msgspec

from natsflow.actors.jetstream.deadletters import DeadLetterStore
from natsflow.events.deadletters import (
    MAX_LISTED,
    DeadLetters,
    DeadLetterView,
    Purged,
    Redriven,
    RedrivenLetter,
    SkippedLetter,
    StoredLetter,
    not_redrivable,
    row_of,
    view_of,
)
from natsflow.events.errors import Conflict, NotFound
from natsflow.events.messages import json_encoder
from natsflow.service.protocol import DlqListRequest, DlqPurgeRequest, DlqRedriveRequest

_PAGE = 256  # dead letters read at a time by ``redrive --all``


class DeadLetterOperations:
    """List, show, redrive and purge the dead letters in NATSFLOW_DLQ."""

    def __init__(self, store: DeadLetterStore) -> None:
        self._store = store

    async def ls(self, request: DlqListRequest) -> DeadLetters:
        letters = await self._store.scan(
            reason=request.reason, after=request.after, limit=request.limit
        )
        total = await self._store.count(request.reason)
        return DeadLetters(total=total, dead_letters=tuple(row_of(letter) for letter in letters))

    async def show(self, letter_id: int) -> DeadLetterView:
        return view_of(await self._store.get(letter_id))

    async def redrive(self, request: DlqRedriveRequest) -> Redriven:
        if request.id is None:
            return await self._redrive_all(request.reason)
        letter = await self._store.get(request.id)
        why = not_redrivable(letter)
        if why is not None:
            raise Conflict(f"not redriven: {why}")
        payload = letter.data
        if request.input is not msgspec.UNSET:
            payload = json_encoder.encode(request.input)
        sent = await self._store.redrive(letter, payload)
        return Redriven(redriven=(sent,), redriven_count=1)

    async def _redrive_all(self, reason: str | None) -> Redriven:
        """Every redrivable dead letter there is now (of ``reason``); one that comes back
        (still not processable) gets a new id past the end and is not sent again."""
        last = await self._store.last_id()
        redriven: list[RedrivenLetter] = []
        skipped: list[SkippedLetter] = []
        counts = [0, 0]
        after = 0
        while after < last:
            page = await self._store.scan(reason=reason, after=after, limit=_PAGE)
            for letter in (letter for letter in page if letter.seq <= last):
                outcome = await self._redrive_one(letter)
                if isinstance(outcome, RedrivenLetter):
                    counts[0] += 1
                    if len(redriven) < MAX_LISTED:
                        redriven.append(outcome)
                else:
                    counts[1] += 1
                    if len(skipped) < MAX_LISTED:
                        skipped.append(outcome)
            if not page:
                break
            after = page[-1].seq
        return Redriven(
            redriven=tuple(redriven),
            skipped=tuple(skipped),
            redriven_count=counts[0],
            skipped_count=counts[1],
        )

    async def _redrive_one(self, letter: StoredLetter) -> RedrivenLetter | SkippedLetter:
        why = not_redrivable(letter)
        if why is not None:
            return SkippedLetter(id=letter.seq, reason=why)
        try:
            return await self._store.redrive(letter, letter.data)
        except Conflict as exc:
            return SkippedLetter(id=letter.seq, reason=str(exc))

    async def purge(self, request: DlqPurgeRequest) -> Purged:
        if request.id is not None:
            if not await self._store.delete(request.id):
                raise NotFound(f"dead letter {request.id} not found in NATSFLOW_DLQ")
            return Purged(purged=1)
        return Purged(purged=await self._store.purge(None if request.all else request.reason))
