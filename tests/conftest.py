"""Shared fixtures: a real nats-server per test and a client connected to it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from hypothesis import settings
from nats.aio.client import Client

from natsflow.service.embedded import EmbeddedServer, scratch_server
from tests.contract import SentChecker

# CI replays the same examples every run (a property failure there is reproducible);
# locally hypothesis explores new ones each time.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# What natsflow sends to anyone: every one of these heard in any test must fit its
# shipped JSON Schema (``natsflow schema``), so the contract is checked on all the
# traffic of the suite, not only in the contract tests.
SENT_BY_NATSFLOW = ("natsflow.task.>", "natsflow.feed.>", "natsflow.cancel.*")


@pytest.fixture
async def nats_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[EmbeddedServer]:
    """A JetStream-enabled nats-server on a free port, its store under ``tmp_path``.

    Every task, feed message and cancel notice published on it during the test is
    checked against its schema, unless the test is marked ``sends_invalid_messages``
    (it publishes broken tasks on purpose).
    """
    server = scratch_server(tmp_path)
    async with server:
        if request.node.get_closest_marker("sends_invalid_messages"):
            yield server
            return
        watcher = await nats.connect(server.url, connect_timeout=5)
        recorder = SentChecker()
        for subject in SENT_BY_NATSFLOW:
            await watcher.subscribe(subject, cb=recorder.heard)
        await watcher.flush()
        try:
            yield server
            with contextlib.suppress(Exception):  # the server may be down at the end
                await watcher.flush(timeout=1)
        finally:
            await watcher.close()
        recorder.assert_valid()


@pytest.fixture
async def nc(nats_server: EmbeddedServer) -> AsyncIterator[Client]:
    """A nats-py client connected to ``nats_server``; closed after the test."""
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()
