"""Custom actions: any action a manifest names that is not built in, served by a team's worker.

A custom action's name is two or more dot-separated tokens, each a lowercase
letter followed by lowercase letters, digits or ``-`` (``billing.charge``,
``ml.embed-text``), at most 64 characters. The first token is the team's
namespace: a one-word name stays reserved for built-in actions (so a typo such
as ``shel`` is an unknown action, not a custom one), and so do the namespaces
``nats`` and ``natsflow``.

Its tasks go to ``natsflow.task.<token>`` and its durable pull consumer on
``NATSFLOW_TASKS`` is ``natsflow-action-<token>``, where ``<token>`` is the name
with dots turned into underscores (``billing.charge`` -> ``billing_charge``).
Names hold no underscores, so the mapping goes both ways without ambiguity
(``action_of_token``), and never meets a built-in's subject
(``nats.request`` -> ``natsflow.task.nats_request``).
"""

from __future__ import annotations

import re

from natsflow.manifests.actions import ACTIONS

__all__ = [
    "CUSTOM_ACTION_PATTERN",
    "RESERVED_NAMESPACES",
    "action_of_token",
    "action_token",
    "custom_action_problem",
    "is_custom_action",
]

CUSTOM_ACTION_PATTERN = r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$"
MAX_LENGTH = 64
RESERVED_NAMESPACES = ("nats", "natsflow")
_NAME = re.compile(CUSTOM_ACTION_PATTERN)
_RULE = (
    "two or more dot-separated tokens of lowercase letters, digits and -, each starting"
    " with a letter, at most 64 characters, like billing.charge"
)


def custom_action_problem(name: str) -> str | None:
    """Why ``name`` cannot be a custom action, in words; None when it can."""
    if name in ACTIONS:
        return f"{name!r} is a built-in action"
    if len(name) > MAX_LENGTH or not _NAME.fullmatch(name):
        return _RULE
    namespace = name.split(".", 1)[0]
    if namespace in RESERVED_NAMESPACES:
        return f"the namespace {namespace!r} is reserved for natsflow's own actions"
    return None


def is_custom_action(name: str) -> bool:
    """Whether ``name`` is a valid custom action name (not built in)."""
    return custom_action_problem(name) is None


def action_token(name: str) -> str:
    """The one subject token (and consumer name part) of an action: dots become ``_``."""
    return name.replace(".", "_")


def action_of_token(token: str) -> str:
    """The custom action behind a token made by ``action_token``."""
    return token.replace("_", ".")
