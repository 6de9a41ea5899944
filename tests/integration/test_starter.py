"""The start use case against a real nats-server: pinning, ``enabled``, idempotency, outages."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.topology import (
    EXECUTIONS_BUCKET,
    INBOX_STREAM,
    inbox_subject,
    provision,
)
from natsflow.actors.starter import Starter
from natsflow.events.errors import InputError, NotFound, Unavailable
from natsflow.events.ids import new_execution_id
from natsflow.events.messages import Start, json_encoder
from natsflow.events.views import ExecutionSummary, Started
from natsflow.manifests.loader import parse_manifest
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually

NOW = 1_700_000_000.0

ONCE = """
name: once
idempotency_key: "${{ input.order }}"
steps:
  a: {action: noop}
"""


def counting_entropy() -> Callable[[int], bytes]:
    """Entropy that differs on every call and is the same in every run."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_starter(js: JetStreamContext, nc: Client, *, ack_timeout: float = 10.0) -> Starter:
    return Starter(
        Definitions(js),
        Publisher(nc, ack_timeout=ack_timeout),
        IdempotencyKeys(js),
        partial(read_summary, js),
        clock=lambda: NOW,
        entropy=counting_entropy(),
    )


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    js = nc.jetstream(timeout=1)
    await provision(js, ack_wait=5)
    return js


async def deploy(js: JetStreamContext, manifest: str) -> str:
    version, _ = await Definitions(js).deploy(parse_manifest(manifest, "yaml"))
    return version


async def start_message(js: JetStreamContext, execution: str) -> Start:
    """The Start waiting in the execution's inbox (no actor runs in these tests)."""
    msg = await js.get_last_msg(INBOX_STREAM, inbox_subject(execution))
    assert msg.data is not None
    return msgspec.json.decode(msg.data, type=Start)


async def test_a_start_pins_the_latest_version_and_publishes_start(
    js: JetStreamContext, nc: Client
) -> None:
    starter = make_starter(js, nc)
    v1 = await deploy(js, "name: pinned\nsteps: {a: {action: noop}}")
    first = await starter.start("pinned", {"n": 1}, None)
    assert first == Started(
        execution_id=new_execution_id("pinned", NOW, (1).to_bytes(5, "big")),
        workflow="pinned",
        version=v1,
        created=True,
    )
    v2 = await deploy(js, "name: pinned\nsteps: {b: {action: noop}}")
    assert v2 != v1
    second = await starter.start("pinned", {"n": 2}, None)
    assert second.version == v2
    assert second.execution_id != first.execution_id
    # Each execution's Start carries the version it pinned: a redeploy changes no plan.
    assert await start_message(js, first.execution_id) == Start(
        workflow="pinned", version=v1, input={"n": 1}
    )
    assert (await start_message(js, second.execution_id)).version == v2


async def test_the_same_key_gives_the_same_execution(js: JetStreamContext, nc: Client) -> None:
    starter = make_starter(js, nc)
    await deploy(js, ONCE)
    first = await starter.start("once", {"order": 1}, "order-1")
    again = await starter.start("once", {"order": 1}, "order-1")
    assert (first.created, again.created) == (True, False)
    assert again.execution_id == first.execution_id
    # Without a key, the manifest's template over the input is the key.
    templated = await starter.start("once", {"order": 2}, None)
    templated_again = await starter.start("once", {"order": 2}, None)
    assert (templated.created, templated_again.created) == (True, False)
    assert templated_again.execution_id == templated.execution_id != first.execution_id
    assert (await start_message(js, templated.execution_id)).idempotency_key == "2"
    # Another starter (another instance) sees the same claims.
    elsewhere = await make_starter(js, nc).start("once", {"order": 1}, "order-1")
    assert elsewhere.execution_id == first.execution_id
    assert elsewhere.created is False


async def test_a_repeated_key_of_a_started_execution_sends_no_start(
    js: JetStreamContext, nc: Client
) -> None:
    """Once the execution has started (its summary exists), a duplicate costs a read:
    no Start reaches its inbox, so no actor is woken up to find nothing to do."""
    starter = make_starter(js, nc)
    await deploy(js, ONCE)
    seen = await nc.subscribe("natsflow.in.>")  # core NATS sees even a deduplicated publish
    first = await starter.start("once", {"order": 1}, "k")
    await js.publish(
        f"$KV.{EXECUTIONS_BUCKET}.{first.execution_id}",
        json_encoder.encode(
            ExecutionSummary(
                execution_id=first.execution_id, workflow="once", version="v", status="running"
            )
        ),
    )
    again = await starter.start("once", {"order": 1}, "k")
    assert (again.execution_id, again.created) == (first.execution_id, False)
    assert again.version == "v"  # the version it pinned (its summary), not today's latest
    # A marker sent after it on the same connection comes next: nothing in between.
    await nc.publish("natsflow.in.marker", b"")
    assert (await seen.next_msg(timeout=5)).subject == inbox_subject(first.execution_id)
    assert (await seen.next_msg(timeout=5)).subject == "natsflow.in.marker"


async def test_a_key_template_that_does_not_fit_the_input_is_refused(
    js: JetStreamContext, nc: Client
) -> None:
    starter = make_starter(js, nc)
    await deploy(js, ONCE)
    with pytest.raises(InputError, match=r"idempotency_key of once: .*no key 'order'"):
        await starter.start("once", {"other": 1}, None)
    with pytest.raises(InputError, match=r"idempotency_key of once: .* is null"):
        await starter.start("once", {"order": None}, None)


async def test_a_disabled_workflow_is_refused(js: JetStreamContext, nc: Client) -> None:
    await deploy(js, "name: off\nenabled: false\nsteps: {a: {action: noop}}")
    with pytest.raises(InputError, match=r"workflow 'off' is disabled \(enabled: false\)"):
        await make_starter(js, nc).start("off", {}, None)


async def test_a_workflow_not_deployed_is_not_found(js: JetStreamContext, nc: Client) -> None:
    with pytest.raises(NotFound, match="workflow 'ghost' is not deployed"):
        await make_starter(js, nc).start("ghost", {}, None)


async def test_a_stopped_nats_server_is_unavailable(
    nats_server: EmbeddedServer, js: JetStreamContext, nc: Client
) -> None:
    """Whatever step meets the outage (reading the definition, claiming the key,
    publishing the start), the caller sees ``Unavailable``, never a NATS error;
    once the server is back, the same start goes through."""
    definitions = Definitions(js)
    for manifest in (ONCE, "name: plain\nsteps: {a: {action: noop}}"):
        await definitions.deploy(parse_manifest(manifest, "yaml"))  # cached from now on
    warm = Starter(
        definitions,
        Publisher(nc, ack_timeout=1),
        IdempotencyKeys(js),
        partial(read_summary, js),
        entropy=counting_entropy(),
    )
    await warm.start("once", {"order": 0}, None)  # the idempotency bucket is bound
    cold = make_starter(js, nc, ack_timeout=1)
    await nats_server.stop()

    attempts = [
        (cold, "once", None, "open the KV bucket natsflow_workflows"),
        (warm, "once", "k", "claim idempotency key 'k' of workflow 'once'"),
        (warm, "plain", None, r"publish to natsflow\.in\.plain-\w+"),
    ]
    for starter, workflow, key, what in attempts:
        with pytest.raises(Unavailable, match=f"{what}: NATS unavailable") as raised:
            await starter.start(workflow, {"order": 1}, key)
        assert not isinstance(raised.value, nats.errors.Error)

    await nats_server.start()
    # The claim of "k" may have reached the server after all (nats-py sends what it
    # buffered on reconnect) without its Start: the retry publishes the Start again.
    again = await eventually(
        lambda: warm.start("once", {"order": 1}, "k"), within=30, ignoring=(Unavailable,)
    )
    assert (await start_message(js, again.execution_id)).idempotency_key == "k"


async def test_a_closed_connection_is_unavailable(js: JetStreamContext, nc: Client) -> None:
    definitions = Definitions(js)
    await definitions.deploy(parse_manifest("name: plain\nsteps: {a: {action: noop}}", "yaml"))
    starter = Starter(definitions, Publisher(nc), IdempotencyKeys(js), partial(read_summary, js))
    await nc.close()
    with pytest.raises(Unavailable, match=r"publish to natsflow\.in\..*connection closed"):
        await starter.start("plain", {}, None)
    with pytest.raises(
        Unavailable, match=r"open the KV bucket natsflow_idempotency: .*connection closed"
    ):
        await starter.start("plain", {}, "k")
