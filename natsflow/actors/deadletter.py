"""Dead letters: what cannot be processed is kept where an operator sees it."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.puller import terminate
from natsflow.actors.jetstream.topology import dlq_subject
from natsflow.actors.metrics import Metrics
from natsflow.events.errors import Undecodable

log = logging.getLogger(__name__)


async def dead_letter(
    nc: Client, publisher: Publisher, metrics: Metrics, msg: Msg, reason: str, error: str
) -> None:
    """Copy ``msg`` to ``natsflow.dlq.<reason>`` with the error, then stop its redelivery."""
    log.error("dead letter (%s): %s", reason, error)
    headers = {"Natsflow-Error": error[:1000], "Natsflow-Original-Subject": msg.subject}
    await publisher.publish(dlq_subject(reason), msg.data, headers)
    metrics.child(metrics.dead_letters, reason).inc()
    await terminate(nc, msg)


async def dead_letter_stored(publisher: Publisher, metrics: Metrics, problem: Undecodable) -> None:
    """Copy a stored message that cannot be decoded to ``natsflow.dlq.<what>`` (``event``,
    ``snapshot``), naming its subject, stream and sequence; it stays where it is too.

    The copy's ``Nats-Msg-Id`` is derived from where the message is stored, so copying it
    again (another instance parking the same execution) stores it once.
    """
    log.error("dead letter (%s): %s", problem.what, problem)
    headers = {
        "Natsflow-Error": str(problem)[:1000],
        "Natsflow-Original-Subject": problem.subject,
        "Natsflow-Original-Stream": problem.stream,
        "Natsflow-Original-Sequence": str(problem.seq),
        "Nats-Msg-Id": f"dlq:{problem.stream}:{problem.seq}",
    }
    await publisher.publish(dlq_subject(problem.what), problem.data, headers)
    metrics.child(metrics.dead_letters, problem.what).inc()
