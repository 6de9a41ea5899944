"""Rolling upgrades: this version runs a definition deployed by a newer one.

The definition is written to the KV bucket directly, as a newer natsflow
would store it: with fields this version does not know at the top of the
record, in the workflow, in a step, in its retry policy and in a fan-out.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from natsflow.actors.jetstream.topology import WORKFLOWS_BUCKET
from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import running

VERSION = "f00dfeed0001"


def newer_definition() -> dict[str, Any]:
    """A stored version (``StoredDefinition``) as a newer natsflow writes it."""
    workflow = {
        "name": "newer",
        "description": "deployed by a newer natsflow",
        "steps": {
            "first": {
                "action": "noop",
                "with": {"greeting": "${{ input.greeting }}"},
                "retry": {"attempts": 3, "backoff": "fixed", "delay": 0.1, "jitter": 0.5},
                "on_failure": "fail",
                "priority": "high",
            },
            "each": {
                "action": "noop",
                "needs": ["first"],
                "with": {"item": "${{ item }}"},
                "for_each": {"items": "${{ input.items }}", "ordered": True},
                "cache": {"ttl": 60},
            },
        },
        "output": {
            "first": "${{ steps.first.output }}",
            "each": "${{ steps.each.output }}",
        },
        "concurrency_limit": 4,
        "schedules": [{"cron": "* * * * *", "timezone": "UTC"}],
    }
    return {
        "name": "newer",
        "version": VERSION,
        "workflow": workflow,
        "deployed_at": time.time(),
        "deployed_by": "natsflow 9.9",
    }


async def test_a_definition_with_fields_this_version_does_not_know_runs(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        kv = await engine.nc.jetstream().key_value(WORKFLOWS_BUCKET)
        await kv.put(f"newer.v.{VERSION}", msgspec.json.encode(newer_definition()))
        await kv.put("newer.latest", VERSION.encode())
        started = await engine.start_full("newer", {"greeting": "hi", "items": ["a", "b"]})
        shown = await engine.wait_done(started["execution_id"])
    assert started["version"] == VERSION
    assert shown["status"] == "completed", shown
    assert shown["version"] == VERSION
    assert shown["output"]["first"] == {"greeting": "hi"}
    assert shown["steps"]["first"]["status"] == "completed"
    assert shown["steps"]["each"]["status"] == "completed"
