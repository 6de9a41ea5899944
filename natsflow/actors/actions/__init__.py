"""Built-in step actions that worker actors run: the I/O edge of natsflow.

An action is ``async def action(ctx: ActionContext, params: dict) -> output``;
`builtin_registry` wires the worker actions of the catalogue
(``natsflow.manifests.actions``, which declares each one's parameters):
``noop``, ``shell``, ``http``, ``nats.request`` and ``python``. Actions raise `TerminalStepError` when retrying cannot help and
`RetryableStepError` otherwise, with a short stable ``kind``.
"""

from natsflow.actors.actions._context import IDEMPOTENCY_HEADER
from natsflow.actors.actions._http import http
from natsflow.actors.actions._nats import (
    ERROR_HEADER,
    ERROR_KIND_HEADER,
    ERROR_RETRYABLE_HEADER,
    nats_request,
)
from natsflow.actors.actions._python import python_action
from natsflow.actors.actions._shell import PROGRESS_PREFIX, shell
from natsflow.actors.actions.base import (
    Action,
    ActionContext,
    ActionRegistry,
    PythonFunction,
    builtin_registry,
    noop,
)

__all__ = [
    "ERROR_HEADER",
    "ERROR_KIND_HEADER",
    "ERROR_RETRYABLE_HEADER",
    "IDEMPOTENCY_HEADER",
    "PROGRESS_PREFIX",
    "Action",
    "ActionContext",
    "ActionRegistry",
    "PythonFunction",
    "builtin_registry",
    "http",
    "nats_request",
    "noop",
    "python_action",
    "shell",
]
