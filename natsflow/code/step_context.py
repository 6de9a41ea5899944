"""``step_context()``: what a running ``@step`` function knows about its own attempt.

A step's side effect is made exactly-once by its handler, with the attempt's
idempotency key (DESIGN invariant 1); manifest actions get it in their
``ActionContext``, a ``@step`` function through ``step_context()``. The app's
worker pool sets it (``running_step``) around each call of the function, in a
context variable, so it follows the step into ``anyio.to_thread`` for sync steps
and into tasks the step starts, and is unset everywhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from natsflow.code.api import CURRENT
from natsflow.events.errors import NatsflowError

__all__ = ["NotInStep", "StepContext", "running_step", "step_context"]


class NotInStep(NatsflowError, RuntimeError):
    """``step_context()`` was called outside a running ``@step`` function."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """One attempt of one code step, as its function sees it.

    A plain frozen dataclass, as ``ActionContext``: never serialized, and it holds a
    live callback.
    """

    execution_id: str
    step: str
    """The step key: ``<step>#<position>``, e.g. ``"fetch#0"``."""
    attempt: int
    """1-based attempt number."""
    idempotency_key: str
    """The attempt's key, ``<execution>:<step key>:<attempt>``: the same as the task's
    (and the ``Natsflow-Idempotency-Key`` a manifest step's handler gets); a retry
    gets a new one. Hand it to the service the step calls to make its effect once."""
    report_progress: Callable[[str], Awaitable[None]] = field(repr=False)

    async def progress(self, message: str) -> None:
        """Report a line of progress text (``show`` and ``watch`` display it; throttled
        by the runtime, so call it freely). From a sync step, which runs in a worker
        thread: ``anyio.from_thread.run(ctx.progress, message)``."""
        await self.report_progress(message)


_STEP: ContextVar[StepContext | None] = ContextVar("natsflow_step_context", default=None)


def step_context() -> StepContext:
    """The running ``@step`` attempt's context (execution, step key, attempt, idempotency
    key); ``NotInStep`` anywhere else, including the ``@workflow`` function itself (it is
    replayed, not attempted) and a step's function called directly (``my_step.fn``)."""
    ctx = _STEP.get()
    if ctx is not None:
        return ctx
    if CURRENT.get() is not None:
        where = "inside a @workflow function, which is replayed and has no attempt"
    else:
        where = "outside a running @step function"
    raise NotInStep(
        f"step_context() was called {where}: call it from the @step function while the"
        " worker runs it"
    )


@contextmanager
def running_step(ctx: StepContext) -> Iterator[StepContext]:
    """Make ``ctx`` what ``step_context()`` returns inside the block (the worker pool
    wraps each call of a step's function in it)."""
    token = _STEP.set(ctx)
    try:
        yield ctx
    finally:
        _STEP.reset(token)
