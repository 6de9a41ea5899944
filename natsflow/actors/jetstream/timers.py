"""Durable timers as ADR-51 message schedules: set one, or drop it before it fires.

A timer is a message on ``natsflow.sched.<execution>.<token>`` whose
``Nats-Schedule: @at <time>`` header makes the server publish its body into
the execution's inbox when it is due, so it survives any restart of natsflow.
"""

from __future__ import annotations

import datetime as dt

from nats.js import JetStreamContext

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import INBOX_STREAM, inbox_subject, timers_subject


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def schedule_headers(execution: str, timer_id: str, due: float) -> dict[str, str]:
    """Headers of the schedule message: fire once at ``due``, into the inbox, stored once."""
    return {
        "Nats-Schedule": f"@at {rfc3339(due)}",
        "Nats-Schedule-Target": inbox_subject(execution),
        "Nats-Msg-Id": f"timer:{execution}:{timer_id}",
    }


async def cancel_timers(js: JetStreamContext, execution: str) -> None:
    """Purge every schedule message of ``execution`` in one call: none of them fires."""
    with unavailable_as(f"cancel the timers of {execution}"):
        await js.purge_stream(INBOX_STREAM, subject=timers_subject(execution))
