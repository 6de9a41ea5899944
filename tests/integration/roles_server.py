"""A nats-server run with ``natsflow.service.roles``' users, and connections as one of
them that record what the server refuses (tests/integration/test_roles.py and
test_app_role.py). A refusal is the server's ``Permissions Violation``, which nats-py
hands to the connection's error callback (the connection stays up); a flush after the
attempt makes sure it has arrived (the server answers in order)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from natsflow.service.embedded import EmbeddedServer, free_port
from natsflow.service.roles import Permissions, example_config
from tests.eventually import eventually

Users = tuple[tuple[str, str, Permissions], ...]
"""(user, password, permissions) of each user the server knows."""


class Refusals:
    """The permission errors the server sent one connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def error(self, exc: Exception) -> None:
        self.seen.append(str(exc))


class RolesServer:
    """An embedded nats-server whose only users are ``users``."""

    def __init__(self, server: EmbeddedServer, users: Users) -> None:
        self.server = server
        self.users = users

    def url(self, user: str) -> str:
        password = next(p for u, p, _ in self.users if u == user)
        return f"nats://{user}:{password}@127.0.0.1:{self.server.port}"

    @asynccontextmanager
    async def as_user(self, user: str) -> AsyncIterator[tuple[NATS, Refusals]]:
        """A connection as ``user``, and what the server refuses it."""
        refusals = Refusals()
        nc = await nats.connect(self.url(user), error_cb=refusals.error, connect_timeout=5)
        try:
            yield nc, refusals
        finally:
            await nc.close()


@asynccontextmanager
async def run_roles_server(tmp_path: Path, users: Users) -> AsyncIterator[RolesServer]:
    """A nats-server with ``example_config(users)``, its files under ``tmp_path``."""
    config = tmp_path / "roles.conf"
    config.write_text(example_config(users))
    server = EmbeddedServer(
        config_file=str(config),
        port=free_port(),
        store_dir=str(tmp_path / "jetstream"),
        log_file=str(tmp_path / "nats-server.log"),
    )
    async with server:
        yield RolesServer(server, users)


async def refused(
    nc: NATS,
    refusals: Refusals,
    attempt: Callable[[], Awaitable[Any]],
    subject: str,
    kind: str = "publish",
) -> None:
    """``attempt`` is refused by the server: a permissions violation for ``kind``
    (publish, subscription) to ``subject`` (nats-py lowercases the server's text)."""
    refusals.seen.clear()
    await attempt()
    await nc.flush(timeout=5)

    async def violated() -> None:
        wanted = f'permissions violation for {kind} to "{subject.lower()}"'
        assert any(wanted in e.lower() for e in refusals.seen), refusals.seen

    await eventually(violated, within=5)


async def allowed(nc: NATS, refusals: Refusals, attempt: Callable[[], Awaitable[Any]]) -> Any:
    """``attempt``'s result; the server refused nothing on the way."""
    refusals.seen.clear()
    result = await attempt()
    await nc.flush(timeout=5)
    assert refusals.seen == []
    return result
