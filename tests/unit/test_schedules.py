"""Schedule triggers, pure: deploy-time validation, due times, late fires, keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from natsflow.events.errors import ManifestError
from natsflow.manifests.schedules import is_late, next_due, schedule_input, schedule_key
from natsflow.manifests.schema import Trigger
from natsflow.manifests.validate import validate_document


def manifest(*triggers: dict[str, Any]) -> dict[str, Any]:
    return {"name": "wf", "steps": {"a": {"action": "noop"}}, "triggers": list(triggers)}


def problems(*triggers: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        validate_document(manifest(*triggers))
    return list(caught.value.problems)


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_valid_schedules_decode_with_their_policies() -> None:
    wf = validate_document(
        manifest(
            {"cron": "*/15 * * * *", "timezone": "Europe/Paris", "input": {"n": 1}},
            {"every": "30s", "catchup": "once", "overlap": "skip"},
        )
    )
    cron, every = wf.triggers
    assert (cron.cron, cron.timezone, cron.input, cron.catchup) == (
        "*/15 * * * *",
        "Europe/Paris",
        {"n": 1},
        "skip",
    )
    assert (every.every, every.catchup, every.overlap) == (30.0, "once", "skip")


def test_invalid_schedules_name_the_field() -> None:
    assert problems(
        {"cron": "every tuesday-ish"},
        {"cron": "61 * * * *"},
        {"cron": "0 * * * *", "timezone": "Mars/Olympus_Mons"},
        {"every": "soon"},
        {"every": "500ms"},
        {"cron": "* * * * *", "every": "1m"},
        {"every": "1m", "timezone": "UTC"},
        {"subject": "orders.created", "catchup": "once"},
        {"every": "1m", "overlap": "later"},
        {"every": "1m", "catchup": "all"},
    ) == [
        'triggers[3].every: invalid duration "soon" (use e.g. 500ms, 2s, 5m, 1h)',
        'triggers[8].overlap: expected one of "allow", "skip", "queue", got "later"',
        'triggers[9].catchup: expected one of "skip", "once", got "all"',
        'triggers[0].cron: invalid cron expression "every tuesday-ish": Wrong number of fields'
        " (five fields: minute hour day-of-month month day-of-week)",
        'triggers[1].cron: invalid cron expression "61 * * * *": Bad minute'
        " (five fields: minute hour day-of-month month day-of-week)",
        'triggers[2].timezone: unknown time zone "Mars/Olympus_Mons": \'No time zone found'
        " with key Mars/Olympus_Mons' (use an IANA name such as Europe/Paris)",
        "triggers[4].every: at least 1s, got 0.5s",
        "triggers[5]: set exactly one of subject, cron or every",
        "triggers[6].timezone: applies to cron only (every is a fixed interval)",
        "triggers[7].catchup: applies to schedules (cron, every) only",
    ]


def test_every_is_aligned_on_the_epoch() -> None:
    every = Trigger(every=30.0)
    assert next_due(every, 90.0) == 120.0
    assert next_due(every, 119.999) == 120.0


def test_cron_follows_the_time_zone_across_daylight_saving() -> None:
    paris = Trigger(cron="30 2 * * *", timezone="Europe/Paris")
    # 2025-03-30 has no 02:30 in Paris (clocks jump 02:00 -> 03:00): cronsim fires at 03:00.
    due = next_due(paris, ts("2025-03-29T12:00:00+00:00"))
    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2025, 3, 30, 1, 0, tzinfo=dt.UTC)
    quarter = Trigger(cron="*/15 * * * *")
    assert next_due(quarter, ts("2025-01-01T10:15:00+00:00")) == ts("2025-01-01T10:30:00+00:00")


def test_a_fire_is_late_after_the_next_due_time_or_a_minute() -> None:
    second, daily = Trigger(every=1.0), Trigger(cron="0 9 * * *")
    assert not is_late(second, 100.0, 100.9)
    assert is_late(second, 100.0, 101.1)
    nine = ts("2025-01-01T09:00:00+00:00")
    assert not is_late(daily, nine, nine + 59)
    assert is_late(daily, nine, nine + 61)


def test_the_due_time_is_in_the_input_and_the_key() -> None:
    trigger = Trigger(every=60.0, input={"report": "daily", "scheduled_at": "overridden"})
    due = ts("2025-01-01T10:15:00+00:00")
    assert schedule_input(trigger, due) == {
        "report": "daily",
        "scheduled_at": "2025-01-01T10:15:00.000Z",
    }
    assert schedule_key("wf", 2, due) == "schedule:wf:2:2025-01-01T10:15:00.000Z"
