"""The operations behind the CLI, the admin micro service and the HTTP API."""

from __future__ import annotations

import builtins
import hashlib
import os
import time
from typing import Any

import msgspec
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import (
    ARCHIVE_STREAM,
    EXECUTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
    inbox_subject,
)
from natsflow.events.errors import InputError, NatsflowError, NotFound
from natsflow.events.messages import Cancel, Start, json_encoder
from natsflow.events.model import ExecutionState, StepState
from natsflow.events.views import ExecutionSummary
from natsflow.manifests.expressions import render
from natsflow.manifests.loader import parse_manifest

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_execution_id(workflow: str, now: float, entropy: bytes) -> str:
    """``<workflow>-<time><random>``: sortable by start time, unique across instances."""
    value = (int(now * 1000) << 40) | int.from_bytes(entropy[:5], "big")
    chars = []
    for _ in range(18):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{workflow}-{''.join(reversed(chars))}"


class Admin:
    """Start, read and steer executions; deploy workflows. Shared by every front end."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        definitions: Definitions,
        publisher: Publisher | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._definitions = definitions
        self._publisher = publisher or Publisher(nc)
        self._store = EventStore(nc, js, self._publisher)

    async def deploy(self, text: str, fmt: str, source: str) -> dict[str, Any]:
        if fmt not in ("yaml", "toml", "json"):
            raise InputError(f"format: expected yaml, toml or json, got {fmt!r}")
        workflow = parse_manifest(text, fmt, source)  # type: ignore[arg-type]
        version, created = await self._definitions.deploy(workflow)
        return {"workflow": workflow.name, "version": version, "created": created}

    async def workflows(self) -> list[dict[str, str]]:
        return await self._definitions.list()

    async def start(self, workflow: str, input: Any, idempotency_key: str | None) -> dict[str, Any]:
        version, definition = await self._definitions.latest(workflow)
        if not definition.enabled:
            raise InputError(f"workflow {workflow!r} is disabled (enabled: false)")
        if idempotency_key is None and definition.idempotency_key is not None:
            try:
                rendered = render(definition.idempotency_key, {"input": input})
            except NatsflowError as exc:
                raise InputError(f"idempotency_key of {workflow}: {exc}") from None
            idempotency_key = str(rendered)
        execution = new_execution_id(workflow, time.time(), os.urandom(5))
        created = True
        if idempotency_key is not None:
            execution, created = await self._claim(workflow, idempotency_key, execution)
        if created:
            start = Start(
                workflow=workflow, version=version, input=input, idempotency_key=idempotency_key
            )
            await self._publisher.publish(
                inbox_subject(execution),
                json_encoder.encode(start),
                {"Nats-Msg-Id": f"start:{execution}"},
            )
        return {
            "execution_id": execution,
            "workflow": workflow,
            "version": version,
            "created": created,
        }

    async def _claim(self, workflow: str, key: str, execution: str) -> tuple[str, bool]:
        """The execution that owns this idempotency key: ours if we are first."""
        kv = await self._js.key_value(IDEMPOTENCY_BUCKET)
        digest = hashlib.sha256(f"{workflow}\0{key}".encode()).hexdigest()[:40]
        try:
            await kv.create(digest, execution.encode())
            return execution, True
        except KeyWrongLastSequenceError:
            entry = await kv.get(digest)
            return (entry.value or b"").decode(), False

    async def show(self, execution_id: str) -> dict[str, Any]:
        loaded = await self._store.load(execution_id)
        if loaded.state.status == "pending":
            raise NotFound(f"execution {execution_id!r} not found")
        try:
            total = len(
                (await self._definitions.get(loaded.state.workflow, loaded.state.version)).steps
            )
        except NotFound:
            total = sum(1 for v in loaded.state.steps.values() if v.parent is None)
        return describe(loaded.state, loaded.last_seq, total)

    async def history(self, execution_id: str, archive: bool = False) -> dict[str, Any]:
        if archive:
            try:
                await self._js.stream_info(ARCHIVE_STREAM)
            except NotFoundError:
                raise InputError(
                    "the archive is off: run the service with NATSFLOW_ARCHIVE=1 to keep the full"
                    f" history in {ARCHIVE_STREAM} (from then on); without --all, history shows"
                    " the latest snapshot and the events after it"
                ) from None
        events = []
        async for seq, event in self._store.read_history(execution_id, archive=archive):
            events.append({"seq": seq, **msgspec.to_builtins(event)})
        snapshot = None if archive else await self._store.snapshot_info(execution_id)
        if not events and snapshot is None:
            raise NotFound(f"execution {execution_id!r} not found")
        out: dict[str, Any] = {"execution_id": execution_id, "events": events}
        if snapshot is not None:
            seq, state, covers = snapshot
            out["snapshot"] = {"seq": seq, "covers": covers, "events_before": state.events}
            out["note"] = (
                f"history before stream sequence {covers} was compacted into a snapshot;"
                " run the service with NATSFLOW_ARCHIVE=1 and use --all for the full trail"
            )
        return out

    async def list(
        self, status: str | None, workflow: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = [r for r in await self._summaries() if _matches(r, status, workflow)]
        rows.sort(key=lambda r: r.started_at or 0.0, reverse=True)
        return [msgspec.to_builtins(r) for r in rows[:limit]]

    async def _summaries(self) -> builtins.list[ExecutionSummary]:
        """Every summary in one batched direct get (ADR-31 multi_last), not a get per key."""
        request = orjson.dumps({"multi_last": [f"$KV.{EXECUTIONS_BUCKET}.>"], "batch": 100000})
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        out: builtins.list[ExecutionSummary] = []
        try:
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.KV_{EXECUTIONS_BUCKET}", request, reply=inbox
            )
            while True:
                msg = await sub.next_msg(timeout=10)
                if msg.headers and msg.headers.get("Status"):
                    break
                if msg.data:
                    out.append(msgspec.json.decode(msg.data, type=ExecutionSummary))
        finally:
            await sub.unsubscribe()
        return out

    async def cancel(self, execution_id: str, reason: str) -> dict[str, Any]:
        status = (await self.show(execution_id))["status"]  # NotFound for an unknown id
        if status != "running":
            raise NatsflowError(
                f"execution {execution_id} is {status}: only a running one can be cancelled"
            )
        await self._js.publish(
            inbox_subject(execution_id), json_encoder.encode(Cancel(reason=reason))
        )
        return {"execution_id": execution_id, "cancel_requested": True}

    async def signal(self, execution_id: str, name: str, data: Any) -> dict[str, Any]:
        await self.show(execution_id)
        raise NatsflowError(
            f"execution {execution_id} has no step waiting for signal {name!r}"
            " (this version has no `wait` action)"
        )


def _matches(row: ExecutionSummary, status: str | None, workflow: str | None) -> bool:
    return (status is None or row.status == status) and (
        workflow is None or row.workflow == workflow
    )


def describe(state: ExecutionState, last_seq: int, total: int) -> dict[str, Any]:
    """What ``show`` prints: status, progress through the steps, each step's attempts."""
    top = {k: v for k, v in state.steps.items() if v.parent is None}
    done = sum(1 for v in top.values() if v.status in ("completed", "skipped"))
    current = [
        k for k, v in state.steps.items() if v.status not in ("completed", "failed", "skipped")
    ]
    return {
        "execution_id": state.execution_id,
        "workflow": state.workflow,
        "version": state.version,
        "status": state.status,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "input": state.input,
        "output": state.output,
        "error": state.error,
        "failed_step": state.failed_step,
        "steps_done": done,
        "steps_total": total,
        "current": current,
        "resume_point": {"events": state.events, "stream_seq": last_seq},
        "steps": {k: _describe_step(v) for k, v in state.steps.items()},
    }


def _describe_step(step: StepState) -> dict[str, Any]:
    return {
        "status": step.status,
        "action": step.action,
        "attempt": step.attempt,
        "iteration": step.iteration,
        "progress": step.progress,
        "error": step.error,
        "error_kind": step.kind,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "due": step.due,
        "parent": step.parent,
        "attempts": [msgspec.to_builtins(a) for a in step.attempts],
    }
