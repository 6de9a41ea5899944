"""The feed's bodies, built from pre-encoded parts, are exactly the JSON of a FeedMessage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from natsflow.events.feed import (
    FeedMessage,
    event_type,
    feed_decoder,
    feed_encoder,
    feed_messages,
    feed_subject,
)
from natsflow.events.model import AnyEvent
from tests.unit.strategies import event_batches

# Names with characters JSON escapes (quotes, backslashes, control and non-ASCII ones).
_names = st.text(min_size=1, max_size=12)


@settings(max_examples=100)
@given(event_batches(max_size=6), _names, _names, st.integers(min_value=1, max_value=2**53))
def test_each_body_is_the_struct_encoded_whole(
    events: tuple[AnyEvent, ...], workflow: str, execution: str, sequence: int
) -> None:
    messages = feed_messages(workflow, execution, sequence, events)
    assert len(messages) == len(events)
    for index, (event, (subject, body)) in enumerate(zip(events, messages, strict=True)):
        whole = FeedMessage(
            execution_id=execution,
            workflow=workflow,
            sequence=sequence,
            index=index,
            event=event,
        )
        assert body == feed_encoder.encode(whole)
        assert feed_decoder.decode(body) == whole
        assert subject == feed_subject(workflow, execution, event_type(event))
