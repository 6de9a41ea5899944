"""The decider seam: how an execution's next events are decided, whatever kind of workflow.

A decider is pure: the state, one inbox message and the time in, the events to
append and the state after them out (folded once, as the decider goes, so the
actor never folds a decision again). The manifest DAG
(``natsflow.manifests.decider.ManifestDecider``) is one implementation; code
workflows plug in beside it without the actor knowing which it drives.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from natsflow.events.messages import AnyInbox
from natsflow.events.model import AnyEvent, ExecutionState


class Decision(msgspec.Struct, frozen=True):
    """What one inbox message changed: the events to append and the state after them.

    No events means nothing to append (a duplicate, a stale result, a message for
    a finished execution); ``state`` is then the state given.
    """

    events: tuple[AnyEvent, ...]
    state: ExecutionState


class Decider(Protocol):
    """Decides for the executions of one workflow version."""

    def react(self, state: ExecutionState, message: AnyInbox, now: float) -> Decision:
        """The events ``message`` leads to at time ``now``, and the state after them."""
        ...
