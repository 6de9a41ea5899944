"""What a manifest says about starting an execution: its idempotency key.

Pure: used by the start use case (``natsflow.actors.starter``) before it
claims the key and publishes the start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from natsflow.events.errors import InputError, NatsflowError
from natsflow.manifests.expressions import render
from natsflow.manifests.schema import Workflow


def start_key(
    workflow: Workflow,
    input: Any,
    given: str | None,
    trigger: Mapping[str, Any] | None = None,
) -> str | None:
    """The key starts of ``workflow`` are deduplicated by, or None for none.

    The manifest's ``idempotency_key`` template wins over a trigger's own key (its
    ``Nats-Msg-Id`` or stream sequence, passed as ``given``), since it names what
    makes two messages the same; a caller's explicit key wins otherwise. The
    template is rendered over ``{"input": input, "trigger": {"subject", "headers"}}``
    (``trigger``: the message's subject and headers; null for other starts). One that cannot be rendered, or renders to null, is the caller's
    error (``InputError``).
    """
    if workflow.idempotency_key is None or (given is not None and trigger is None):
        return given
    scope = {"input": input, "trigger": dict(trigger) if trigger is not None else None}
    try:
        rendered = render(workflow.idempotency_key, scope)
    except NatsflowError as exc:
        raise InputError(f"idempotency_key of {workflow.name}: {exc}") from None
    if rendered is None:
        raise InputError(
            f"idempotency_key of {workflow.name}: {workflow.idempotency_key!r} is null"
            " for this input"
        )
    return str(rendered)
