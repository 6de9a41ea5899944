"""Reads the admin API needs beyond one execution's history.

One execution's summary, and whether the archive stream exists. NATS's errors
become ``Unavailable`` here, like everywhere in the adapter; a summary that
cannot be decoded becomes ``Undecodable``, never a raw decoder error. Listing
executions is the execution index's (``natsflow.actors.index``): reading every
summary at once does not scale (and a batched direct get over more than 1,024
keys answers a status that was once read as the end of an empty list).
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import (
    ARCHIVE_STREAM,
    EXECUTIONS_BUCKET,
    bind_bucket,
    summary_subject,
)
from natsflow.events.errors import Undecodable
from natsflow.events.views import ExecutionSummary

log = logging.getLogger(__name__)


async def read_summary(js: JetStreamContext, execution: str) -> ExecutionSummary | None:
    """The summary of ``execution``; None until its start has been decided and appended."""
    kv = await bind_bucket(js, EXECUTIONS_BUCKET)
    with unavailable_as(f"read the summary of {execution}"):
        try:
            entry = await kv.get(execution)
        except (KeyNotFoundError, KeyDeletedError):
            return None
    try:
        return _decode_summary(entry.value or b"{}")
    except msgspec.DecodeError as exc:
        subject = summary_subject(execution)
        raise Undecodable(
            execution, "summary", f"KV_{EXECUTIONS_BUCKET}", subject, entry.revision or 0, str(exc)
        ) from None


def _decode_summary(data: bytes) -> ExecutionSummary:
    return msgspec.json.decode(data, type=ExecutionSummary)


async def archive_exists(js: JetStreamContext) -> bool:
    """Whether the service keeps the full history in the archive stream (``NATSFLOW_ARCHIVE``)."""
    with unavailable_as(f"look up the stream {ARCHIVE_STREAM}"):
        try:
            await js.stream_info(ARCHIVE_STREAM)
        except NotFoundError:
            return False
    return True
