"""What a manifest says about starting an execution: its idempotency key.

Pure: used by the start use case (``natsflow.actors.starter``) before it
claims the key and publishes the start.
"""

from __future__ import annotations

from typing import Any

from natsflow.events.errors import InputError, NatsflowError
from natsflow.manifests.expressions import render
from natsflow.manifests.schema import Workflow


def start_key(workflow: Workflow, input: Any, given: str | None) -> str | None:
    """The key starts of ``workflow`` are deduplicated by, or None for none.

    The caller's key wins; else the manifest's ``idempotency_key`` template is
    rendered over ``{"input": input}``. A template that cannot be rendered over
    this input, or renders to null, is the caller's error (``InputError``).
    """
    if given is not None or workflow.idempotency_key is None:
        return given
    try:
        rendered = render(workflow.idempotency_key, {"input": input})
    except NatsflowError as exc:
        raise InputError(f"idempotency_key of {workflow.name}: {exc}") from None
    if rendered is None:
        raise InputError(
            f"idempotency_key of {workflow.name}: {workflow.idempotency_key!r} is null"
            " for this input"
        )
    return str(rendered)
