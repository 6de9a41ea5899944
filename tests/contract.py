"""Check messages against the shipped JSON Schemas (``natsflow schema NAME``), in tests.

``check(name, body)`` validates one message with ``jsonschema``; ``Recorder``
listens on ``natsflow.>`` (and trigger reply inboxes) with a plain NATS client,
sorts what it hears by subject into the contract's message kinds, and checks
each, so a test sees exactly what a worker in another language would receive.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natsflow.service.contract import shipped


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads(shipped(name))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(name: str, message: Any) -> list[str]:
    """Every way ``message`` (plain JSON values) breaks schema ``name``, as ``path: reason``."""
    return sorted(f"{e.json_path}: {e.message}" for e in validator(name).iter_errors(message))


def check(name: str, body: bytes) -> Any:
    """``body`` decoded, after asserting it matches schema ``name``."""
    message = json.loads(body)
    found = problems(name, message)
    assert not found, f"a {name} message breaks its schema: {found}\n{body!r}"
    return message


def kind_of(subject: str, body: bytes) -> str | None:
    """The contract name of a message heard on ``subject``; None for natsflow's internals
    (events, snapshots, summaries, timers) and the admin API's other verbs."""
    tokens = subject.split(".")
    if tokens[0] != "natsflow" or len(tokens) < 3:
        return None
    match tokens[1]:
        case "task":
            return "task"
        case "feed":
            return "feed"
        case "cancel":
            return "cancel-notice"
        case "api" if tokens[2] == "signal":
            return "signal"
        case "in" | "result":  # results and progress (wherever 10B's subjects put them)
            try:
                kind = json.loads(body).get("kind")
            except (ValueError, AttributeError):
                return "result"  # not JSON: a result that breaks the contract
            return kind if kind in ("result", "progress") else None
    return None


class Recorder:
    """Every contract message heard on ``natsflow.>``, by kind, each checked on arrival.

    ``bad`` lists the ones that break their schema (a test sending bad input on purpose
    reads it; others assert it is empty through ``assert_valid``).
    """

    def __init__(self) -> None:
        self.heard: dict[str, list[Any]] = defaultdict(list)
        self.bad: list[str] = []
        self._subs: list[Subscription] = []

    async def start(self, nc: Client, *extra: tuple[str, str]) -> Recorder:
        """Listen on ``natsflow.>``, and on each ``(subject, kind)`` of ``extra``."""
        self._subs.append(await nc.subscribe("natsflow.>", cb=self._heard))
        for subject, kind in extra:

            async def heard(msg: Msg, kind: str = kind) -> None:
                self._record(kind, msg)

            self._subs.append(await nc.subscribe(subject, cb=heard))
        await nc.flush()
        return self

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()

    async def _heard(self, msg: Msg) -> None:
        kind = kind_of(msg.subject, msg.data)
        if kind is not None:
            self._record(kind, msg)

    def _record(self, kind: str, msg: Msg) -> None:
        try:
            message = json.loads(msg.data)
        except ValueError:
            self.bad.append(f"{kind} on {msg.subject}: not JSON: {msg.data!r}")
            return
        found = problems(kind, message)
        if found:
            self.bad.append(f"{kind} on {msg.subject}: {found}")
        self.heard[kind].append(message)

    def assert_valid(self) -> None:
        assert not self.bad, "messages that break their schema:\n" + "\n".join(self.bad)


class SentChecker:
    """Checks each message natsflow sends (task, feed, cancel notice) as it is heard,
    keeping only the ones that break their schema (every test's server has one)."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.checked = 0

    async def heard(self, msg: Msg) -> None:
        kind = kind_of(msg.subject, msg.data)
        if kind is None:
            return
        self.checked += 1
        try:
            found = problems(kind, json.loads(msg.data))
        except ValueError:
            found = [f"not JSON: {msg.data[:200]!r}"]
        if found:
            self.bad.append(f"{kind} on {msg.subject}: {found}")

    def assert_valid(self) -> None:
        assert not self.bad, "natsflow sent messages that break their schema:\n" + "\n".join(
            self.bad[:20]
        )
