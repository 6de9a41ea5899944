"""Open subject waits, kept in the KV bucket ``natsflow_waits``.

A ``wait`` step on a subject is recorded here when it begins (the effect of
``ListenFor``) and removed when it ends (``StopListening``): one key per
(execution, step), whose value names the subject. Every instance's waits actor
(``natsflow.actors.waits``) watches the bucket and listens on the subjects it
names. Keys are base64url tokens, as execution ids and step keys may hold
characters a KV key may not.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from nats.js import JetStreamContext

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import WAITS_BUCKET, bind_bucket


class OpenWait(msgspec.Struct, frozen=True, kw_only=True):
    """A step waiting for a message on ``subject`` (a KV value: decoded leniently)."""

    execution_id: str
    step: str
    subject: str


_decoder = msgspec.json.Decoder(OpenWait)


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def wait_key(execution: str, step: str) -> str:
    """The KV key of the wait of ``step`` in ``execution``."""
    return f"{_token(execution)}.{_token(step)}"


def wait_record_subject(execution: str, step: str) -> str:
    """The key as a subject: a put (or a delete marker) is a publish to it."""
    return f"$KV.{WAITS_BUCKET}.{wait_key(execution, step)}"


DELETE_HEADERS = {"KV-Operation": "DEL"}
"""Headers of a publish that deletes a key (what nats-py's ``KeyValue.delete`` sends)."""


@asynccontextmanager
async def watching_waits(
    js: JetStreamContext,
) -> AsyncIterator[AsyncIterator[tuple[str, OpenWait | None]]]:
    """Every open wait, then every change: ``(key, wait)``, ``wait`` None when it ended
    (or its value cannot be read). Raises ``Unavailable`` when NATS does not answer."""
    kv = await bind_bucket(js, WAITS_BUCKET)
    with unavailable_as(f"watch the KV bucket {WAITS_BUCKET}"):
        watcher = await kv.watchall()

    async def changes() -> AsyncIterator[tuple[str, OpenWait | None]]:
        async for entry in watcher:
            if entry is None:
                continue  # the marker after the values stored when the watch began
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                yield entry.key, None
                continue
            try:
                yield entry.key, _decoder.decode(entry.value)
            except msgspec.DecodeError:
                yield entry.key, None

    try:
        yield changes()
    finally:
        with unavailable_as(f"stop watching the KV bucket {WAITS_BUCKET}"):
            await watcher.stop()  # type: ignore[no-untyped-call]
