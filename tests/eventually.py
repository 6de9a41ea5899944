"""``eventually``: the one way tests wait for a condition (a deadline, never a bare sleep)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    within: float,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check`` until it returns without raising ``AssertionError``; return its value.

    Exceptions of the types in ``ignoring`` count as "not yet" too (a service
    restarting, an execution not visible yet). After ``within`` seconds the last
    failure is raised as an ``AssertionError`` that says how long was waited.
    """
    last: BaseException | None = None
    not_yet: tuple[type[BaseException], ...] = (AssertionError, *ignoring)
    with anyio.move_on_after(within):
        while True:
            try:
                return await check()
            except not_yet as exc:
                last = exc
            await anyio.sleep(interval)
    raise AssertionError(f"not true within {within}s: {last}") from last
