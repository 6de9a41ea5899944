"""The durable timers waiting in the inbox stream, and firing one before it is due.

For the test environment's skippable clock (``natsflow.testing``): a timer is an
ADR-51 schedule message on ``natsflow.sched.<execution>.<token>`` (``timers.py``);
firing it early publishes its body to its target, as the server would, and purges
the schedule so it does not fire again (if the server fires it in between, the
actor drops the second ``timer_due`` as a stale timer).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import INBOX_STREAM

_SCHEDULES = "natsflow.sched.>"


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A schedule message not fired yet: when, into which subject, with what body."""

    subject: str
    execution: str
    timer_id: str
    purpose: str  # sleep, wait, retry, repeat, deadline, heartbeat (from the timer id)
    due: float
    target: str
    body: bytes


async def pending_timers(js: JetStreamContext) -> list[PendingTimer]:
    """Every timer set and not fired or cancelled yet, earliest first."""
    with unavailable_as("list the pending timers"):
        info = await js.stream_info(INBOX_STREAM, subjects_filter=_SCHEDULES)
        subjects = sorted((info.state.subjects or {}) if info.state else {})
        timers = []
        for subject in subjects:
            msg = await js.get_last_msg(INBOX_STREAM, subject)
            timer = _timer(subject, msg.headers or {}, msg.data or b"")
            if timer is not None:
                timers.append(timer)
    return sorted(timers, key=lambda t: (t.due, t.subject))


def _timer(subject: str, headers: dict[str, str], body: bytes) -> PendingTimer | None:
    schedule, target = headers.get("Nats-Schedule", ""), headers.get("Nats-Schedule-Target")
    if not schedule.startswith("@at ") or target is None:
        return None  # a purge marker or something else on the subject
    due = dt.datetime.fromisoformat(schedule[4:].replace("Z", "+00:00")).timestamp()
    fields = msgspec.json.decode(body) if body else {}
    timer_id = str(fields.get("timer_id", "")) if isinstance(fields, dict) else ""
    parts = timer_id.split("/")
    purpose = parts[-3] if len(parts) >= 4 else ""
    execution = subject.removeprefix("natsflow.sched.").rpartition(".")[0]
    return PendingTimer(subject, execution, timer_id, purpose, due, target, body)


async def fire_now(js: JetStreamContext, timer: PendingTimer) -> None:
    """Deliver ``timer`` now (as the server would when due), then drop its schedule."""
    with unavailable_as(f"fire timer {timer.timer_id} of {timer.execution}"):
        await js.publish(
            timer.target, timer.body, headers={"Nats-Msg-Id": f"skip:{timer.subject}:{timer.due}"}
        )
        await js.purge_stream(INBOX_STREAM, subject=timer.subject)
