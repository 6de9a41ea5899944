"""Python callables the example manifests use (``--python-module natsflow.actors.examples``)."""

from __future__ import annotations

from typing import Any

from natsflow.actors.actions import ActionContext, ActionRegistry
from natsflow.events.errors import RetryableStepError


def flaky_third_time(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Fails its first two attempts, succeeds on the third: shows retries with backoff."""
    if ctx.attempt < 3:
        raise RetryableStepError(f"flaky: attempt {ctx.attempt} failed on purpose", kind="flaky")
    return {"attempt": ctx.attempt, "ok": True}


def always_fails(ctx: ActionContext, args: dict[str, Any]) -> None:
    """Fails every attempt: shows a step exhausting its retries."""
    raise RetryableStepError(f"always_fails: attempt {ctx.attempt}", kind="broken")


def fetch_page(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for a paged API: page ``page`` of ``pages``, with a ``has_more`` flag."""
    page, pages = int(args.get("page", 0)), int(args.get("pages", 1))
    return {"page": page, "items": [page * 10 + i for i in range(3)], "has_more": page + 1 < pages}


def register(registry: ActionRegistry) -> None:
    registry.register_python("flaky_third_time", flaky_third_time)
    registry.register_python("always_fails", always_fails)
    registry.register_python("fetch_page", fetch_page)
