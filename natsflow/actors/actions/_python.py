"""The ``python`` action: call a callable registered by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio.to_thread
import msgspec

from natsflow.actors.actions._context import Action, ActionContext, PythonFunction, convert_params
from natsflow.events.errors import RetryableStepError, StepError, TerminalStepError
from natsflow.manifests.actions import PYTHON


def python_action(lookup: Callable[[str], PythonFunction]) -> Action:
    """The ``python`` action, resolving ``function`` names with ``lookup``.

    Params (`PythonParams`): ``function`` (a registered name) and ``args`` (a
    mapping, default empty); the callable is called as ``fn(ctx, args)``. A coroutine function is
    awaited on the event loop. A plain function runs in a worker thread, so that a
    blocking call cannot stall the worker's other steps and acks; if the attempt is
    cancelled the thread is abandoned (Python cannot stop a thread) and runs to its
    end in the background. From that thread, progress is reported with
    ``anyio.from_thread.run(ctx.report_progress, text)``.

    A `StepError` from the callable propagates as is; any other exception becomes
    a `RetryableStepError` whose kind is the exception's class name. The output is
    the return value after a JSON round trip (tuples become lists, datetimes
    strings), so that a first run and a replay see the same value; a value that
    cannot be encoded is a `TerminalStepError` of kind ``not_serializable``.
    """

    async def python(ctx: ActionContext, params: dict[str, Any]) -> Any:
        p = convert_params(PYTHON, params)
        fn = lookup(p.function)
        try:
            if _is_async(fn):
                result = await fn(ctx, p.args)
            else:
                call = partial(fn, ctx, p.args)
                result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except StepError:
            raise
        except Exception as e:
            raise RetryableStepError(
                f"python: {p.function} raised {type(e).__name__}: {e}", kind=type(e).__name__
            ) from e
        try:
            return msgspec.json.decode(msgspec.json.encode(result))
        except (TypeError, ValueError, OverflowError) as e:
            raise TerminalStepError(
                f"python: {p.function} returned a value of type"
                f" {type(result).__name__!r}, which is not JSON-serializable: {e}",
                kind="not_serializable",
            ) from e

    return python


def _is_async(fn: Callable[..., Any]) -> bool:
    # An instance with an ``async def __call__`` is not a coroutine function itself.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
