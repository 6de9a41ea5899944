"""Deployed workflow versions in the KV bucket ``natsflow_workflows``.

Keys are ``<name>.v.<version>`` (immutable, one per content hash) and
``<name>.latest`` (the version new executions pin). A deploy writes the
version first and moves ``latest`` last, so a crash in between leaves an
unreferenced version, never a half-deployed workflow.

A stored version is decoded leniently (the manifest structs do not forbid
unknown fields; ``manifests.validate`` refuses them at deploy): during a
rolling upgrade an older instance runs a definition a newer one deployed,
ignoring the fields it does not know.
"""

from __future__ import annotations

import time

import anyio
import msgspec
from nats.js import JetStreamContext
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import WORKFLOWS_BUCKET, bind_bucket
from natsflow.events.errors import NotFound
from natsflow.manifests.loader import manifest_version
from natsflow.manifests.schema import StoredDefinition, Workflow


class Definitions:
    """Read-through cache of deployed versions (versions never change, so it never expires)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        self._cache: dict[tuple[str, str], Workflow] = {}
        # name -> latest version, kept fresh by `follow_latest` (deploys on any instance)
        self._latest: dict[str, str] = {}
        self._changed = anyio.Event()

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await bind_bucket(self._js, WORKFLOWS_BUCKET)
        return self._kv

    async def deploy(self, workflow: Workflow) -> tuple[str, bool]:
        """Store a validated workflow; returns (version, whether it was new)."""
        kv = await self._bucket()
        version = manifest_version(workflow)
        record = StoredDefinition(
            name=workflow.name, version=version, workflow=workflow, deployed_at=time.time()
        )
        created = True
        with unavailable_as(f"deploy {workflow.name} version {version}"):
            try:
                await kv.create(f"{workflow.name}.v.{version}", msgspec.json.encode(record))
            except KeyWrongLastSequenceError:  # the key exists: the same content is deployed
                created = False
            await kv.put(f"{workflow.name}.latest", version.encode())
        self._cache[(workflow.name, version)] = workflow
        self._latest[workflow.name] = version
        return version, created

    async def follow_latest(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the latest-version cache current by watching ``*.latest`` (until cancelled)."""
        kv = await self._bucket()
        with unavailable_as(f"watch the latest versions in {WORKFLOWS_BUCKET}"):
            watcher = await kv.watch("*.latest")
        task_status.started()
        try:
            async for entry in watcher:
                if entry is None:
                    continue  # the end of the initial values
                name = entry.key[: -len(".latest")]
                if entry.value:
                    self._latest[name] = entry.value.decode()
                else:
                    self._latest.pop(name, None)
                self._changed.set()
                self._changed = anyio.Event()
        finally:
            with anyio.move_on_after(2, shield=True):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def changed(self) -> None:
        """Return at the next change of any workflow's latest version."""
        await self._changed.wait()

    async def latest(self, name: str) -> tuple[str, Workflow]:
        """The version new executions of ``name`` pin, and its definition."""
        version = self._latest.get(name)
        if version is not None:
            return version, await self.get(name, version)
        version = (
            await self._read(
                f"{name}.latest",
                f"read the latest version of workflow {name!r}",
                f"workflow {name!r} is not deployed (natsflow deploy FILE)",
            )
        ).decode()
        return version, await self.get(name, version)

    async def _read(self, key: str, what: str, missing: str) -> bytes:
        """The value of ``key``; ``NotFound(missing)`` without one, ``Unavailable`` naming
        ``what`` when NATS does not answer."""
        kv = await self._bucket()
        try:
            with unavailable_as(what):
                entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            raise NotFound(missing) from None
        return entry.value or b""

    async def get(self, name: str, version: str) -> Workflow:
        cached = self._cache.get((name, version))
        if cached is not None:
            return cached
        record = decode_deployed(
            await self._read(
                f"{name}.v.{version}",
                f"read workflow {name!r} version {version}",
                f"workflow {name!r} version {version} is not deployed",
            )
        )
        self._cache[(name, version)] = record.workflow
        return record.workflow

    async def list(self) -> list[dict[str, str]]:
        """Every deployed workflow with its latest version."""
        kv = await self._bucket()
        out = []
        with unavailable_as(f"list the workflows in {WORKFLOWS_BUCKET}"):
            try:
                keys = await kv.keys()
            except NoKeysError:  # an empty bucket
                return []
            for key in sorted(k for k in keys if k.endswith(".latest")):
                try:
                    entry = await kv.get(key)
                except (KeyNotFoundError, KeyDeletedError):  # deleted since the listing
                    continue
                out.append(
                    {"workflow": key[: -len(".latest")], "version": (entry.value or b"").decode()}
                )
        return out


def decode_deployed(data: bytes) -> StoredDefinition:
    """A stored version, read leniently: fields a newer natsflow added are ignored."""
    return msgspec.json.decode(data, type=StoredDefinition)
