"""Schedule triggers, pure: validation, due times, the input and key of each start.

A schedule is a trigger with ``cron`` (five fields: minute hour day-of-month
month day-of-week, evaluated by ``cronsim`` in ``timezone``, so daylight-saving
changes follow the zone's wall clock) or ``every`` (an interval of at least a
second, aligned on the Unix epoch so that every instance computes the same due
times). Time comes in as an argument: nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from typing import Any

from cronsim import CronSim, CronSimError

from natsflow.manifests.schema import Trigger
from natsflow.manifests.structure import Problems, show

__all__ = [
    "MIN_EVERY",
    "check_schedule",
    "is_late",
    "is_schedule",
    "next_due",
    "rfc3339",
    "schedule_input",
    "schedule_key",
]

MIN_EVERY = 1.0  # seconds; shorter would be a busy loop through the server
# A due time taken this long after it came (or after the next one came, if sooner) was
# missed (no instance ran, or none could start it): its ``catchup`` policy applies.
LATE_AFTER = 60.0
_SCHEDULE_ONLY = ("timezone", "catchup", "overlap")


def is_schedule(trigger: Trigger) -> bool:
    return trigger.cron is not None or trigger.every is not None


def check_schedule(trigger: dict[str, Any], path: str, problems: Problems) -> None:
    """Problems of one trigger as written (after the structural pass), as ``path: reason``."""
    subject, cron, every = trigger.get("subject"), trigger.get("cron"), trigger.get("every")
    if sum(v is not None for v in (subject, cron, every)) != 1:
        problems.append(f"{path}: set exactly one of subject, cron or every")
    if isinstance(cron, str):
        if (reason := cron_problem(cron)) is not None:
            problems.append(f"{path}.cron: invalid cron expression {show(cron)}: {reason}")
    elif subject is not None:
        problems.extend(
            f"{path}.{field}: applies to schedules (cron, every) only"
            for field in _SCHEDULE_ONLY
            if field in trigger
        )
    timezone = trigger.get("timezone")
    if timezone is not None and cron is None:
        problems.append(f"{path}.timezone: applies to cron only (every is a fixed interval)")
    if isinstance(timezone, str) and (reason := zone_problem(timezone)) is not None:
        problems.append(f"{path}.timezone: unknown time zone {show(timezone)}: {reason}")
    if isinstance(every, float | int) and every < MIN_EVERY:
        problems.append(f"{path}.every: at least 1s, got {show(every)}s")


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a five-field cron expression, or None."""
    try:
        next(CronSim(expression, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    except CronSimError as exc:
        return f"{exc} (five fields: minute hour day-of-month month day-of-week)"
    except StopIteration:  # e.g. "0 0 30 2 *": a day that never comes
        return "it never fires"
    return None


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone known here, or None."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        return f"{exc} (use an IANA name such as Europe/Paris)"
    return None


def next_due(trigger: Trigger, after: float) -> float:
    """The first due time of a schedule strictly after ``after`` (Unix seconds)."""
    if trigger.every is not None:
        period = max(trigger.every, MIN_EVERY)
        return (math.floor(after / period) + 1) * period
    assert trigger.cron is not None, "next_due of a subject trigger"
    zone = zoneinfo.ZoneInfo(trigger.timezone or "UTC")
    start = dt.datetime.fromtimestamp(after, zone)
    return next(CronSim(trigger.cron, start)).timestamp()


def is_late(trigger: Trigger, due: float, now: float) -> bool:
    """Whether due time ``due``, taken at ``now``, was missed: taken after the next due
    time came, or more than ``LATE_AFTER`` seconds after it."""
    return now - due > min(next_due(trigger, due) - due, LATE_AFTER)


def rfc3339(ts: float) -> str:
    """``ts`` as an RFC 3339 UTC time with milliseconds, e.g. ``2025-01-01T10:15:00.000Z``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def schedule_input(trigger: Trigger, due: float) -> dict[str, Any]:
    """The input of the execution started for ``due``: the trigger's input and the due time."""
    return {**trigger.input, "scheduled_at": rfc3339(due)}


def schedule_key(workflow: str, index: int, due: float) -> str:
    """The idempotency key of the start for ``due``: one execution per due time, forever."""
    return f"schedule:{workflow}:{index}:{rfc3339(due)}"
