"""Idempotency keys of starts, in the KV bucket ``natsflow_idempotency``.

A key (per workflow) is claimed with a KV create, which succeeds once: the
first start stores its execution id under the key, later starts with the same
key read that id back. Unlike ``Nats-Msg-Id``, a claim does not expire with the
stream's duplicate window.
"""

from __future__ import annotations

import hashlib

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.publisher import Publisher, PublishError
from natsflow.actors.jetstream.topology import IDEMPOTENCY_BUCKET, bind_bucket
from natsflow.events.errors import Conflict

CLAIM_ATTEMPTS = 3
WRONG_LAST_SEQUENCE = 10071  # the key exists (or its deletion marker does)


def key_digest(workflow: str, key: str) -> str:
    """The KV key for ``key`` of ``workflow``: any text becomes a valid, fixed-size key."""
    return hashlib.sha256(f"{workflow}\0{key}".encode()).hexdigest()[:40]


class IdempotencyKeys:
    """Claims of idempotency keys: which execution owns each."""

    def __init__(self, js: JetStreamContext, publisher: Publisher | None = None) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        # claims as compare-and-set publishes through the publisher (group commit under
        # fsync); without one, nats-py's KV create
        self._publisher = publisher

    async def claim(self, workflow: str, key: str, execution: str) -> tuple[str, bool]:
        """The execution owning ``key`` of ``workflow``: ``(execution, True)`` if this call
        claimed it, else the earlier owner's id and False.

        Raises ``Unavailable`` when NATS does not answer.
        """
        if self._kv is None:
            self._kv = await bind_bucket(self._js, IDEMPOTENCY_BUCKET)
        digest = key_digest(workflow, key)
        with unavailable_as(f"claim idempotency key {key!r} of workflow {workflow!r}"):
            if self._publisher is not None:
                try:
                    await self._publisher.publish(
                        f"$KV.{IDEMPOTENCY_BUCKET}.{digest}",
                        execution.encode(),
                        {"Nats-Expected-Last-Subject-Sequence": "0"},
                    )
                    return execution, True
                except PublishError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise
                # claimed before (or a released claim's marker): read, or claim as below
            for _ in range(CLAIM_ATTEMPTS):
                try:
                    await self._kv.create(digest, execution.encode())
                    return execution, True
                except KeyWrongLastSequenceError:  # claimed before: read the owner
                    pass
                try:
                    entry = await self._kv.get(digest)
                except (KeyNotFoundError, KeyDeletedError):  # released meanwhile: claim again
                    continue
                return (entry.value or b"").decode(), False
        raise Conflict(
            f"idempotency key {key!r} of workflow {workflow!r} was claimed and released"
            f" {CLAIM_ATTEMPTS} times while starting; try again"
        )
