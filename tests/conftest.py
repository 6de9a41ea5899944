"""Shared fixtures: a real nats-server per test and a client connected to it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from hypothesis import settings
from nats.aio.client import Client

from natsflow.service.embedded import EmbeddedServer, scratch_server

# CI replays the same examples every run (a property failure there is reproducible);
# locally hypothesis explores new ones each time.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """A JetStream-enabled nats-server on a free port, its store under ``tmp_path``."""
    server = scratch_server(tmp_path)
    async with server:
        yield server


@pytest.fixture
async def nc(nats_server: EmbeddedServer) -> AsyncIterator[Client]:
    """A nats-py client connected to ``nats_server``; closed after the test."""
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()
