"""Reads the admin API needs beyond one execution's history.

Every execution summary in one batched direct get (ADR-31 ``multi_last``, not a
get per key), and whether the archive stream exists. NATS's errors become
``Unavailable`` here, like everywhere in the adapter; a summary that cannot be
decoded becomes ``Undecodable`` (one execution's summary) or a row marked
``unknown`` (the list), never a raw decoder error.
"""

from __future__ import annotations

import logging

import msgspec
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError

from natsflow.actors.jetstream.errors import unavailable, unavailable_as
from natsflow.actors.jetstream.topology import (
    ARCHIVE_STREAM,
    EXECUTIONS_BUCKET,
    bind_bucket,
    summary_subject,
)
from natsflow.events.errors import Undecodable
from natsflow.events.views import ExecutionSummary, unreadable_summary

log = logging.getLogger(__name__)

READ_TIMEOUT = 10.0
_MAX_SUMMARIES = 100_000


async def all_summaries(nc: Client) -> list[ExecutionSummary]:
    """The summary of every execution in the KV bucket ``natsflow_executions``."""
    request = orjson.dumps({"multi_last": [summary_subject(">")], "batch": _MAX_SUMMARIES})
    what = f"read the execution summaries from {EXECUTIONS_BUCKET}"
    out: list[ExecutionSummary] = []
    with unavailable_as(what):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            await nc.publish(f"$JS.API.DIRECT.GET.KV_{EXECUTIONS_BUCKET}", request, reply=inbox)
            while True:
                msg = await sub.next_msg(timeout=READ_TIMEOUT)
                status = msg.headers.get("Status") if msg.headers else None
                if status in ("503", "408"):
                    raise unavailable(what, f"status {status}")
                if status:  # 204: the end of the batch; 404: no executions yet
                    break
                if msg.data:
                    out.append(_listed(msg.data, msg.headers or {}))
        finally:
            await sub.unsubscribe()
    return out


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


def _listed(data: bytes, headers: dict[str, str]) -> ExecutionSummary:
    """One row of ``all_summaries``: a summary that cannot be decoded is listed as
    ``unknown``, naming where it is and why, so one bad row does not hide the others."""
    try:
        return _decode_summary(data)
    except msgspec.DecodeError as exc:
        subject = headers.get("Nats-Subject", "")
        execution = subject.removeprefix(summary_subject(""))
        seq = int(headers.get("Nats-Sequence", "0"))
        problem = Undecodable(
            execution, "summary", f"KV_{EXECUTIONS_BUCKET}", subject, seq, str(exc), data
        )
        log.warning("%s", problem)
        return unreadable_summary(execution, str(problem))


async def archive_exists(js: JetStreamContext) -> bool:
    """Whether the service keeps the full history in the archive stream (``NATSFLOW_ARCHIVE``)."""
    with unavailable_as(f"look up the stream {ARCHIVE_STREAM}"):
        try:
            await js.stream_info(ARCHIVE_STREAM)
        except NotFoundError:
            return False
    return True
