"""Python callables the example manifests use (``--python-module actors.examples``)."""

from __future__ import annotations

from typing import Any

from actors.actions import ActionContext, ActionRegistry
from events.errors import RetryableStepError


def flaky_third_time(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Fails its first two attempts, succeeds on the third: shows retries with backoff."""
    if ctx.attempt < 3:
        raise RetryableStepError(f"flaky: attempt {ctx.attempt} failed on purpose", kind="flaky")
    return {"attempt": ctx.attempt, "ok": True}


def always_fails(ctx: ActionContext, args: dict[str, Any]) -> None:
    """Fails every attempt: shows a step exhausting its retries."""
    raise RetryableStepError(f"always_fails: attempt {ctx.attempt}", kind="broken")


def register(registry: ActionRegistry) -> None:
    registry.register_python("flaky_third_time", flaky_third_time)
    registry.register_python("always_fails", always_fails)
