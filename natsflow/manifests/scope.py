"""What the manifest decider's parts share: template scopes, step keys, timers, backoff.

Pure, like the rest of the decider.
"""

from __future__ import annotations

from typing import Any

import msgspec

from natsflow.events.model import ExecutionState, StepAttemptFailed, StepState
from natsflow.manifests.schema import RetryPolicy


def base_name(key: str) -> str:
    """The manifest step behind a step key (``sync[orders]`` -> ``sync``)."""
    return key.split("[", 1)[0]


def unwrap(expr: str) -> str:
    text = expr.strip()
    if text.startswith("${{") and text.endswith("}}"):
        return text[3:-2].strip()
    return text


def backoff(policy: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based)."""
    if retry_after is not None:
        return min(retry_after, policy.max_delay)
    if policy.backoff == "fixed":
        return min(policy.delay, policy.max_delay)
    return min(policy.delay * policy.multiplier ** (attempt - 1), policy.max_delay)


def timer_id(key: str, purpose: str, iteration: int, attempt: int) -> str:
    return f"{key}/{purpose}/{iteration}/{attempt}"


class Scope:
    """Template scope, built once per decision round and only if a template needs it."""

    def __init__(self, state: ExecutionState) -> None:
        self._state = state
        self._base: dict[str, Any] | None = None

    def base(self) -> dict[str, Any]:
        if self._base is None:
            s = self._state
            self._base = {
                "input": s.input,
                "execution": {"id": s.execution_id, "workflow": s.workflow},
                # the trigger message's subject and headers; null for other starts
                "trigger": msgspec.to_builtins(s.trigger) if s.trigger is not None else None,
                "steps": {
                    k: {"output": v.output, "status": v.status, "error": v.error}
                    for k, v in s.steps.items()
                    if v.parent is None
                },
            }
        return self._base

    @property
    def execution_id(self) -> str:
        return self._state.execution_id

    def for_step(self, step: StepState, iteration: int | None = None) -> dict[str, Any]:
        """Scope of a step's templates; ``iteration`` is the one about to start."""
        scope = dict(self.base())
        if step.parent is not None:
            scope["item"] = step.item
        number = step.iteration if iteration is None else iteration
        scope["loop"] = {"output": step.output, "iteration": number}
        return scope


def final_failure(
    key: str, attempt: int, error: str, kind: str, now: float, iteration: int = 0
) -> StepAttemptFailed:
    return StepAttemptFailed(
        at=now, step=key, attempt=attempt, error=error, kind=kind, iteration=iteration
    )
