"""The event feed: every event of every execution, as JSON any NATS client can read.

After each decision is stored, the execution actor publishes each of its events
(core NATS) on ``natsflow.feed.<workflow>.<execution>.<type>``: subscribe to
``natsflow.feed.billing.*.execution_completed`` to hear every billing execution
end, or ``natsflow.feed.*.<execution>.>`` for one execution's story.

Core NATS delivers at most once, to whoever listens at that moment, in the order
published (one execution's events come from one actor, in stream order).
``sequence`` (the events stream's sequence of the stored batch) and ``index``
(the event's place in it) identify an event, so a reader that also reads the
events stream (``natsflow history``, an ordered consumer) can tell what it has
seen. A durable reader uses the stream; the feed is for reacting now.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from natsflow.events.model import AnyEvent

FEED_PREFIX = "natsflow.feed"


class FeedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One event of one execution, as published on the feed."""

    execution_id: str
    workflow: str
    sequence: Annotated[int, Meta(ge=1)]
    index: Annotated[int, Meta(ge=0)]
    event: AnyEvent


def event_type(event: AnyEvent) -> str:
    """The event's ``type`` tag (``execution_completed``): the feed subject's last token."""
    return str(event.__struct_config__.tag)


def feed_subject(workflow: str, execution: str, kind: str) -> str:
    """``natsflow.feed.<workflow>.<execution>.<type>`` (``*`` for any token)."""
    return f"{FEED_PREFIX}.{workflow}.{execution}.{kind}"


def feed_messages(
    workflow: str, execution: str, sequence: int, events: tuple[AnyEvent, ...]
) -> list[tuple[str, bytes]]:
    """The subject and body of each event of the batch stored at ``sequence``.

    Each body is the JSON of its ``FeedMessage``, byte for byte, built from parts: the
    fields every event of the batch shares are encoded once, then each event alone (no
    struct per message; this runs after every decision).
    """
    head = b"".join(
        (
            b'{"execution_id":',
            feed_encoder.encode(execution),
            b',"workflow":',
            feed_encoder.encode(workflow),
            b',"sequence":%d,"index":' % sequence,
        )
    )
    prefix = f"{FEED_PREFIX}.{workflow}.{execution}."
    return [
        (
            prefix + event_type(event),
            b'%s%d,"event":%s}' % (head, index, feed_encoder.encode(event)),
        )
        for index, event in enumerate(events)
    ]


feed_encoder = msgspec.json.Encoder()
feed_decoder = msgspec.json.Decoder(FeedMessage)
