"""``nats.request`` against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from natsflow.actors.actions import (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    ERROR_RETRYABLE_HEADER,
    IDEMPOTENCY_HEADER,
    ActionContext,
    builtin_registry,
)
from natsflow.events.errors import RetryableStepError, TerminalStepError
from natsflow.service.embedded import scratch_server


@pytest.fixture(scope="module")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One nats-server for this module's tests (ready when its log says so)."""
    async with scratch_server(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


def make_ctx(nc: Client | None) -> ActionContext:
    async def ignore(text: str) -> None:
        pass

    return ActionContext(
        execution_id="ex-1",
        step="charge",
        attempt=1,
        idempotency_key="ex-1:charge:1",
        report_progress=ignore,
        nc=nc,
    )


async def request(nc: Client, params: dict[str, Any]) -> Any:
    return await builtin_registry().get("nats.request")(make_ctx(nc), params)


async def test_reply_json_and_headers(nc: Client) -> None:
    seen: list[Msg] = []

    async def handler(msg: Msg) -> None:
        seen.append(msg)
        await msg.respond(b'{"charged": 42}')

    await nc.subscribe("test.charge", cb=handler)
    out = await request(
        nc, {"subject": "test.charge", "data": {"amount": 42}, "headers": {"X-Tenant": "t1"}}
    )
    assert out == {"charged": 42}
    (msg,) = seen
    assert msg.data == b'{"amount":42}'
    assert msg.headers is not None
    assert msg.headers[IDEMPOTENCY_HEADER] == "ex-1:charge:1"
    assert msg.headers["X-Tenant"] == "t1"


async def test_reply_text_and_empty(nc: Client) -> None:
    async def handler(msg: Msg) -> None:
        await msg.respond(b"" if msg.data == b"empty" else b"hi " + msg.data)

    await nc.subscribe("test.text", cb=handler)
    assert await request(nc, {"subject": "test.text", "data": "bob"}) == {"data": "hi bob"}
    assert await request(nc, {"subject": "test.text", "data": "empty"}) is None


@pytest.mark.parametrize(
    ("headers", "error", "kind"),
    [
        ({ERROR_HEADER: "card declined"}, RetryableStepError, "remote_error"),
        (
            {ERROR_HEADER: "card declined", ERROR_RETRYABLE_HEADER: "false"},
            TerminalStepError,
            "remote_error",
        ),
        (
            {ERROR_HEADER: "card declined", ERROR_KIND_HEADER: "declined"},
            RetryableStepError,
            "declined",
        ),
        (
            {"Nats-Service-Error": "card declined", "Nats-Service-Error-Code": "400"},
            TerminalStepError,
            "service_error",
        ),
        (
            {"Nats-Service-Error": "card declined", "Nats-Service-Error-Code": "503"},
            RetryableStepError,
            "service_error",
        ),
    ],
)
async def test_error_reply(
    nc: Client, headers: dict[str, str], error: type[Exception], kind: str
) -> None:
    async def handler(msg: Msg) -> None:
        assert msg.reply
        await nc.publish(msg.reply, b"", headers=headers)

    sub = await nc.subscribe("test.fail", cb=handler)
    try:
        with pytest.raises(error, match="card declined") as info:
            await request(nc, {"subject": "test.fail"})
        assert getattr(info.value, "kind", None) == kind
    finally:
        await sub.unsubscribe()


async def test_no_responders_is_retryable(nc: Client) -> None:
    with pytest.raises(RetryableStepError, match="no responders") as info:
        await request(nc, {"subject": "test.nobody"})
    assert info.value.kind == "no_responders"


async def test_timeout_is_retryable(nc: Client) -> None:
    async def silent(msg: Msg) -> None:
        pass

    await nc.subscribe("test.silent", cb=silent)
    with pytest.raises(RetryableStepError, match=r"no reply within 0\.2s") as info:
        await request(nc, {"subject": "test.silent", "timeout": 0.2})
    assert info.value.kind == "timeout"


async def test_without_a_client_is_terminal() -> None:
    ctx = make_ctx(None)
    with pytest.raises(TerminalStepError) as info:
        await builtin_registry().get("nats.request")(ctx, {"subject": "x"})
    assert info.value.kind == "no_connection"
