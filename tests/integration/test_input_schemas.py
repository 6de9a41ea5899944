"""A manifest's input schema against a real nats-server: the start use case, the admin API,
HTTP and the CLI refuse an invalid input with every problem by path, and create nothing."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

import natsflow
import natsflow.actors.starter as starter_module
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.topology import INBOX_STREAM, provision
from natsflow.actors.starter import Starter
from natsflow.events.errors import InvalidInput
from natsflow.manifests.inputs import InputSchema
from natsflow.manifests.loader import parse_manifest
from natsflow.service.embedded import EmbeddedServer, free_port
from tests.integration.harness import running
from tests.integration.test_cli import natsflow as cli

ORDERS = """
name: orders
input:
  type: object
  required: [amount, currency]
  properties:
    amount: {type: number, minimum: 0}
    currency: {enum: [EUR, USD]}
    email: {type: string, format: email}
    lines:
      type: array
      items: {type: object, required: [sku]}
steps:
  take:
    action: noop
output: "${{ input }}"
"""
BAD = {"amount": "abc", "email": "nobody", "lines": [{"sku": "a"}, {}]}
BAD_PROBLEMS = [
    "input: 'currency' is a required property",
    "input.amount: 'abc' is not of type 'number'",
    "input.email: 'nobody' is not a 'email'",
    "input.lines[1]: 'sku' is a required property",
]
GOOD = {"amount": 12.5, "currency": "EUR", "email": "ada@example.com", "lines": [{"sku": "a"}]}

BAD_SCHEMA = """
name: bad-schema
input:
  type: object
  properties:
    amount: {type: nmber}
    code: {$ref: "https://example.com/code.json"}
steps:
  a: {action: noop}
"""


# --- the start use case ------------------------------------------------------


@pytest.fixture
async def js(nc: NatsClient) -> JetStreamContext:
    js = nc.jetstream(timeout=1)
    await provision(js, ack_wait=5)
    return js


def make_starter(js: JetStreamContext, nc: NatsClient) -> Starter:
    counter = itertools.count(1)
    return Starter(
        Definitions(js),
        Publisher(nc, ack_timeout=10),
        IdempotencyKeys(js),
        partial(read_summary, js),
        entropy=lambda n: next(counter).to_bytes(n, "big"),
    )


async def inbox_messages(js: JetStreamContext) -> int:
    return (await js.stream_info(INBOX_STREAM)).state.messages


async def test_an_invalid_input_publishes_nothing_and_claims_no_key(
    js: JetStreamContext, nc: NatsClient
) -> None:
    starter = make_starter(js, nc)
    version, _ = await Definitions(js).deploy(parse_manifest(ORDERS, "yaml"))
    before = await inbox_messages(js)
    with pytest.raises(InvalidInput) as refused:
        await starter.start("orders", BAD, "order-1")
    assert refused.value.problems == BAD_PROBLEMS
    assert str(refused.value).startswith(
        f"invalid input for workflow 'orders' (version {version}):\n"
    )
    assert await inbox_messages(js) == before
    # The key was not claimed by the refused start: a valid one with it creates.
    started = await starter.start("orders", GOOD, "order-1")
    assert started.created is True
    assert await inbox_messages(js) == before + 1


async def test_the_pinned_versions_schema_applies_compiled_once(
    js: JetStreamContext, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[dict[str, Any]] = []

    class Counting(InputSchema):
        def __init__(self, schema: dict[str, Any]) -> None:
            compiled.append(schema)
            super().__init__(schema)

    monkeypatch.setattr(starter_module, "InputSchema", Counting)
    starter = make_starter(js, nc)
    definitions = Definitions(js)
    await definitions.deploy(parse_manifest(ORDERS, "yaml"))
    for _ in range(3):
        await starter.start("orders", GOOD, None)
    with pytest.raises(InvalidInput):
        await starter.start("orders", {**GOOD, "currency": "GBP"}, None)
    assert len(compiled) == 1  # once for the version, not per start
    # A redeploy with another schema: new starts are checked against the new version's.
    await definitions.deploy(parse_manifest(ORDERS.replace("EUR, USD", "EUR, USD, GBP"), "yaml"))
    await make_starter(js, nc).start("orders", {**GOOD, "currency": "GBP"}, None)
    # No schema: any input.
    await definitions.deploy(parse_manifest("name: free\nsteps: {a: {action: noop}}", "yaml"))
    await starter.start("free", "anything", None)
    assert len(compiled) == 2


# --- the admin API and HTTP --------------------------------------------------


async def raw(nc: NatsClient, verb: str, body: dict[str, Any]) -> tuple[str | None, Any]:
    msg = await nc.request(f"natsflow.api.{verb}", orjson.dumps(body), timeout=10)
    return (msg.headers or {}).get("Nats-Service-Error-Code"), orjson.loads(msg.data)


async def test_the_admin_api_and_http_answer_400_with_every_problem(
    nats_server: EmbeddedServer,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running(nats_server, http_port=port) as engine, aiohttp.ClientSession() as http:
        version = (await engine.deploy(ORDERS))["version"]
        code, body = await raw(engine.nc, "start", {"workflow": "orders", "input": BAD})
        with pytest.raises(natsflow.InvalidInput) as refused:
            await engine.client.start("orders", BAD)
        url = f"{base}/v1/workflows/orders/executions"
        async with http.post(url, json={"input": BAD}) as resp:
            http_refused = resp.status, await resp.json()
        assert await engine.ls() == []  # nothing was started
        # A valid input starts and completes, over NATS and over HTTP.
        over_nats = await engine.start("orders", GOOD)
        async with http.post(url, json={"input": GOOD}) as resp:
            assert resp.status == 201
            over_http = (await resp.json())["execution_id"]
        done = [await engine.wait_done(e) for e in (over_nats, over_http)]
    headline = f"invalid input for workflow 'orders' (version {version})"
    message = headline + ":\n" + "\n".join(f"  {p}" for p in BAD_PROBLEMS)
    assert (code, body) == ("400", {"error": message, "problems": BAD_PROBLEMS})
    assert refused.value.problems == BAD_PROBLEMS
    assert refused.value.headline == headline
    assert http_refused == (400, {"error": message, "problems": BAD_PROBLEMS})
    assert [(d["status"], d["output"]) for d in done] == [("completed", GOOD)] * 2


# --- the CLI -----------------------------------------------------------------


async def test_the_cli_exits_2_listing_every_problem(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    orders, bad_schema = tmp_path / "orders.yaml", tmp_path / "bad-schema.yaml"
    orders.write_text(ORDERS)
    bad_schema.write_text(BAD_SCHEMA)
    async with running(nats_server) as engine:
        refused_deploy = await cli(engine, "deploy", str(bad_schema))
        listed = await cli(engine, "workflows", "--json")
        assert (await cli(engine, "deploy", str(orders))).code == 0
        refused = await cli(engine, "start", "orders", "--input", orjson.dumps(BAD).decode())
        rows = await engine.ls()
        run = await cli(engine, "start", "orders", "--input", orjson.dumps(GOOD).decode(), "--wait")
        final = await engine.ls()
    assert refused_deploy.code == 2, refused_deploy
    for problem in (
        "input.properties.amount.type: 'nmber' is not valid under any of the given schemas",
        "input.properties.code.$ref: reference 'https://example.com/code.json' leaves the schema",
    ):
        assert problem in refused_deploy.err, refused_deploy.err
    assert "bad-schema" not in [w["workflow"] for w in listed.json()]
    assert refused.code == 2, refused
    assert "invalid input for workflow 'orders'" in refused.err
    for problem in BAD_PROBLEMS:
        assert f"  {problem}\n" in refused.err, refused.err
    assert refused.out == ""
    assert rows == []
    assert run.code == 0, run
    assert [row["status"] for row in final] == ["completed"]


HELLO = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "hello.yaml"


async def test_hello_refuses_a_start_without_a_name(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(HELLO)
        with pytest.raises(natsflow.InvalidInput) as refused:
            await engine.start("hello", {})
        shown = await engine.wait_done(await engine.start("hello", {"name": "Ada"}))
    assert refused.value.problems == ["input: 'name' is a required property"]
    assert shown["output"] == {"greeting": "Hello, Ada!"}
