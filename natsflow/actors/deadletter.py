"""Dead letters: what cannot be processed is kept where an operator sees it.

Written here (the headers are ``natsflow.events.deadletters``'); listed, shown,
redriven and purged through ``natsflow.actors.jetstream.deadletters``.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.puller import terminate
from natsflow.actors.jetstream.topology import dlq_subject
from natsflow.actors.metrics import Metrics
from natsflow.events.deadletters import ORIGINAL_SEQUENCE, ORIGINAL_STREAM, letter_headers
from natsflow.events.errors import Undecodable

log = logging.getLogger(__name__)


async def dead_letter(
    nc: Client, publisher: Publisher, metrics: Metrics, msg: Msg, reason: str, error: str
) -> int:
    """Copy ``msg`` to ``natsflow.dlq.<reason>`` with the error, its subject and headers
    (``natsflow.events.deadletters``), then stop its redelivery; returns the letter's id."""
    log.error("dead letter (%s): %s", reason, error)
    headers = letter_headers(error, msg.subject, msg.headers)
    letter = await publisher.publish(dlq_subject(reason), msg.data, headers)
    metrics.child(metrics.dead_letters, reason).inc()
    await terminate(nc, msg)
    return letter


async def dead_letter_stored(publisher: Publisher, metrics: Metrics, problem: Undecodable) -> None:
    """Copy a stored message that cannot be decoded to ``natsflow.dlq.<what>`` (``event``,
    ``snapshot``), naming its subject, stream and sequence; it stays where it is too.

    The copy's ``Nats-Msg-Id`` is derived from where the message is stored, so copying it
    again (another instance parking the same execution) stores it once.
    """
    log.error("dead letter (%s): %s", problem.what, problem)
    headers = {
        **letter_headers(str(problem), problem.subject),
        ORIGINAL_STREAM: problem.stream,
        ORIGINAL_SEQUENCE: str(problem.seq),
        "Nats-Msg-Id": f"dlq:{problem.stream}:{problem.seq}",
    }
    await publisher.publish(dlq_subject(problem.what), problem.data, headers)
    metrics.child(metrics.dead_letters, problem.what).inc()
