"""The admin API as a NATS micro service (``$SRV.PING``/``INFO``/``STATS`` work).

Endpoints are ``natsflow.api.<verb>``, one per request type of
``service.protocol``; each decodes its body as that verb's struct and hands it
to the one handler (``Operations.handle``). A reply is the handler's answer as
JSON. An error reply carries the ``Nats-Service-Error-Code`` (400, 404, 409,
503, 500: see ``service.outcomes``) and ``Nats-Service-Error`` headers, and a
JSON body ``{"error": ..., "problems": [...]}``.

Requests are answered concurrently in the service's task group, so nats-py's
own per-endpoint statistics would only time the hand-off and never see an
error: ``AdminService.stats`` reports what the handlers measured instead.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgspec
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig, ServiceStats

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.events.errors import Unavailable
from natsflow.service.outcomes import outcome
from natsflow.service.protocol import (
    API_PREFIX,
    REQUEST_TYPES,
    ErrorReply,
    Handler,
    decode_request,
)

log = logging.getLogger(__name__)

VERSION = importlib.metadata.version("natsflow")
_encoder = msgspec.json.Encoder()


@dataclass
class _Tally:
    """What one endpoint's handlers measured: answered requests, error replies, time."""

    answered: int = 0
    errors: int = 0
    last_error: str | None = None
    processing_ns: int = 0


class AdminService(Service):
    """nats-py's micro service, reporting the statistics its spawned handlers keep."""

    def __init__(self, nc: Client, config: ServiceConfig) -> None:
        super().__init__(nc, config)
        self.tallies: dict[str, _Tally] = {}

    def stats(self) -> ServiceStats:
        stats = super().stats()
        for endpoint in stats.endpoints:
            tally = self.tallies.get(endpoint.name)
            if tally is not None:
                endpoint.num_errors = tally.errors
                endpoint.last_error = tally.last_error
                endpoint.processing_time = tally.processing_ns
                endpoint.average_processing_time = tally.processing_ns // max(1, tally.answered)
        return stats


async def answer(handle: Handler, verb: str, request: Request, tally: _Tally) -> None:
    """Decode, carry out and answer one request to ``natsflow.api.<verb>``."""
    started = time.perf_counter_ns()
    try:
        reply = await handle(decode_request(verb, request.data))
        data = _encoder.encode(reply)
    except Exception as exc:
        result = outcome(exc)
        tally.errors += 1
        tally.last_error = f"{result.status}:{result.message}"
        body = _encoder.encode(ErrorReply(error=result.message, problems=result.problems))
        headline = result.message.splitlines()[0][:500]
        await _send(request.respond_error(str(result.status), headline, data=body))
    else:
        await _send(request.respond(data))
    tally.answered += 1
    tally.processing_ns += time.perf_counter_ns() - started


async def _send(reply: Awaitable[None]) -> None:
    """Send a reply; a connection gone meanwhile is logged, not raised into the task group."""
    try:
        with unavailable_as("answer an admin request"):
            await reply
    except Unavailable as exc:
        log.warning("%s", exc)


def _spawner(
    handle: Handler, verb: str, tally: _Tally, tg: TaskGroup, limiter: anyio.CapacityLimiter
) -> Callable[[Request], Awaitable[None]]:
    """nats-py calls a subscription's handler one request at a time; answer many at once."""

    async def limited(request: Request) -> None:
        async with limiter:
            await answer(handle, verb, request, tally)

    async def spawn(request: Request) -> None:
        tg.start_soon(limited, request)

    return spawn


async def start_admin_service(
    nc: Client, handle: Handler, tg: TaskGroup, *, concurrency: int = 256
) -> AdminService:
    """Register ``natsflow.api.<verb>`` for every verb (queue group: any instance may answer).

    Requests are handled in ``tg``, at most ``concurrency`` at a time.
    """
    config = ServiceConfig(name="natsflow", version=VERSION, description="natsflow admin API")
    service = AdminService(nc, config)
    await service.start()
    group = service.add_group(name=API_PREFIX)
    limiter = anyio.CapacityLimiter(concurrency)
    for verb in REQUEST_TYPES:
        # An endpoint's name allows no dot: ``dlq.ls`` is named ``dlq-ls``, on natsflow.api.dlq.ls.
        name = verb.replace(".", "-")
        tally = service.tallies[name] = _Tally()
        handler = _spawner(handle, verb, tally, tg, limiter)
        await group.add_endpoint(name=name, subject=verb, handler=handler)
    return service
