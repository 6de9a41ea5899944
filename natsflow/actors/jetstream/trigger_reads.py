"""What ``natsflow triggers`` reads from JetStream: trigger backlogs and their last activity.

- An enabled workflow's trigger consumer (``natsflow-trigger-<workflow>``) says how
  many of its messages wait (``num_pending``: not yet delivered, plus
  ``num_ack_pending``: delivered, not yet acknowledged) and when it last delivered
  one (``delivered.last_active``): constant cost, whatever the backlog.
- A disabled workflow has no consumer (its messages wait in the trigger stream):
  the stream's per-subject counts under the trigger's subject filter say how many.
  That answer lists every distinct subject, so past the server's page of subjects
  (100,000) the count is left out rather than guessed.
- A schedule's next due time and the execution it started last are in its
  ``natsflow.cron.<workflow>.<i>`` message (``jetstream.schedules.current_fire``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from natsflow.actors.jetstream.errors import unavailable, unavailable_as
from natsflow.actors.jetstream.triggers import TRIGGERS_STREAM, trigger_consumer

__all__ = ["ConsumerActivity", "consumer_activity", "waiting_on"]

_TIMEOUT = 5.0


class ConsumerActivity(msgspec.Struct, frozen=True, kw_only=True):
    """An enabled workflow's trigger consumer: messages waiting or in flight, and when it
    last delivered one (Unix seconds; None: never since it was created)."""

    pending: int
    last_delivered: float | None


async def consumer_activity(js: JetStreamContext, workflow: str) -> ConsumerActivity | None:
    """The trigger consumer of ``workflow``; None when it has none (disabled, or not
    created yet by a running instance)."""
    with unavailable_as(f"read the trigger consumer of {workflow}"):
        try:
            info = await js.consumer_info(TRIGGERS_STREAM, trigger_consumer(workflow))
        except NotFoundError:
            return None
    last = info.delivered.last_active if info.delivered is not None else None
    return ConsumerActivity(
        pending=(info.num_pending or 0) + (info.num_ack_pending or 0),
        last_delivered=_seconds(last),
    )


class _State(msgspec.Struct):
    subjects: dict[str, int] | None = None


class _Info(msgspec.Struct):
    state: _State | None = None
    total: int = 0
    error: dict[str, Any] | None = None


async def waiting_on(nc: Client, subject: str) -> int | None:
    """How many messages wait in the trigger stream on ``subject`` (wildcards allowed);
    None when they span more distinct subjects than one answer lists (not counted)."""
    body = msgspec.json.encode({"subjects_filter": subject})
    what = f"count the messages on {subject} in {TRIGGERS_STREAM}"
    with unavailable_as(what):
        reply = await nc.request(f"$JS.API.STREAM.INFO.{TRIGGERS_STREAM}", body, timeout=_TIMEOUT)
    try:
        info = msgspec.json.decode(reply.data, type=_Info)
    except msgspec.DecodeError as exc:
        raise unavailable(what, f"unreadable answer: {exc}") from None
    if info.error is not None:
        if info.error.get("err_code") == 10059:  # stream not found: nothing captured yet
            return 0
        raise unavailable(what, str(info.error.get("description", info.error)))
    subjects = (info.state.subjects if info.state else None) or {}
    if info.total > len(subjects):
        return None
    return sum(subjects.values())


def _seconds(at: dt.datetime | None) -> float | None:
    """A server time as Unix seconds; the zero time Go sends for "never" is None."""
    if at is None or at.year < 2000:
        return None
    return at.timestamp()
