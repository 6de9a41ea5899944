"""The code-workflow API: ``@workflow``, ``@step`` and the durable primitives.

A workflow is an ``async def`` replayed from its history by the code decider
(``natsflow.code.replay``): every durable call (a step, ``sleep``,
``wait_for_signal``, a child workflow, ``gather`` of those) is an awaitable
that hands a request to the decider, which answers it from the history or turns
it into a command and suspends the workflow there. Outside a running workflow
these calls raise ``NotInWorkflow``: a step's own function is ``my_step.fn``.

Nothing here does I/O: steps run in a worker pool, the workflow in the decider.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, get_type_hints, overload

from natsflow.code.values import storable
from natsflow.events.errors import NatsflowError
from natsflow.manifests.schema import NAME_PATTERN, RetryPolicy, Trigger

P = ParamSpec("P")
R = TypeVar("R")

_STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_WORKFLOW_NAME = re.compile(NAME_PATTERN)
_MISSING: Any = object()


class NotInWorkflow(NatsflowError, RuntimeError):
    """A durable primitive was used outside a running code workflow."""


class StepFailed(NatsflowError):
    """A step (or a child workflow, or a wait that timed out) failed for good: raised
    at its call site inside the workflow, which may catch it."""

    def __init__(self, step: str, error: str, kind: str) -> None:
        super().__init__(f"step {step} failed: {error}")
        self.step = step
        self.error = error
        self.kind = kind


class Context(Protocol):
    """What the primitives need from the decider replaying the workflow."""

    workflow: str
    execution_id: str

    def now(self) -> float: ...
    def uuid(self) -> str: ...
    def patched(self, name: str) -> bool: ...
    def replaying(self) -> bool: ...


CURRENT: ContextVar[Context | None] = ContextVar("natsflow_code_context", default=None)


def current(what: str) -> Context:
    ctx = CURRENT.get()
    if ctx is None:
        raise NotInWorkflow(f"{what} can only be used inside a running @workflow")
    return ctx


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One durable call, as the workflow hands it to the decider.

    ``kind``: ``step``, ``sleep``, ``wait`` (a signal) or ``child``; ``name``: the
    step, the signal or the child workflow; ``returns``: the type the stored
    result converts to.
    """

    kind: str
    name: str
    input: Any = None
    timeout: float | None = None
    default: Any = _MISSING
    returns: Any = Any

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self)


@dataclasses.dataclass(frozen=True, slots=True)
class Gather:
    """Several durable calls at once; their results in the order given."""

    calls: tuple[Call, ...]
    return_exceptions: bool = False  # failures (``StepFailed``) in the list, not raised

    def __await__(self) -> Generator[Any, Any, list[Any]]:
        results: list[Any] = yield self
        return results


class StepDef(Generic[P, R]):
    """A ``@step`` function: calling it inside a workflow is a durable step call."""

    def __init__(
        self, fn: Callable[P, Any], *, name: str, retry: RetryPolicy, timeout: float | None
    ) -> None:
        if not _STEP_NAME.fullmatch(name):
            raise ValueError(
                f"step name {name!r}: lowercase letters, digits and _, starting with a letter"
            )
        self.fn = fn
        self.name = name
        self.retry = retry
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._hints: dict[str, Any] | None = None

    def hints(self) -> dict[str, Any]:
        """Parameter and return type hints (resolved lazily: forward references; kept
        once resolved, as resolving them costs more than the rest of a step call)."""
        if self._hints is not None:
            return self._hints
        try:
            self._hints = get_type_hints(self.fn)
        except (NameError, TypeError):
            return {}
        return self._hints

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        ctx = current(f"step {self.name}")
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"step {self.name} of workflow {ctx.workflow}: {exc}") from None
        what = f"step {self.name} of workflow {ctx.workflow} was given"
        data = storable({"args": list(args), "kwargs": kwargs}, what)
        returns = self.hints().get("return", Any)
        return Call("step", self.name, data, self.timeout, returns=returns)

    def identity(self) -> str:
        """What a change of makes a new version: name, signature, policy, code."""
        return "|".join(
            (self.name, str(self.signature), repr(self.retry), repr(self.timeout), _code(self.fn))
        )


class WorkflowDef(Generic[P, R]):
    """A ``@workflow`` function and what is deployed of it."""

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        name: str,
        triggers: tuple[Trigger, ...],
        idempotency_key: str | None,
        input: dict[str, Any] | None,
        description: str,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@workflow {name}: {fn.__qualname__} must be an async def")
        if not _WORKFLOW_NAME.fullmatch(name):
            raise ValueError(f"workflow name {name!r} does not match {NAME_PATTERN}")
        self.fn = fn
        self.name = name
        self.triggers = triggers
        self.idempotency_key = idempotency_key
        self.input = input
        self.description = description or (inspect.getdoc(fn) or "").split("\n", 1)[0]
        self.params = list(inspect.signature(fn).parameters)
        self._input_type: Any = _MISSING

    def input_type(self) -> Any:
        if not self.params:
            return None
        if self._input_type is not _MISSING:  # resolved once (see ``StepDef.hints``)
            return self._input_type
        try:
            self._input_type = get_type_hints(self.fn).get(self.params[0], Any)
        except (NameError, TypeError):
            return Any
        return self._input_type

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Inside a workflow: run this one as a child and await its output."""
        if kwargs or len(args) > 1:
            raise TypeError(f"child workflow {self.name} takes one input")
        return start_child(self.name, args[0] if args else None)

    def identity(self) -> str:
        return f"{self.name}|{_code(self.fn)}"


def _code(fn: Callable[..., Any]) -> str:
    """A fingerprint of a function's compiled code (bytecode, names, constants)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return getattr(fn, "__qualname__", repr(fn))
    parts = (code.co_code, repr(code.co_names).encode(), repr(code.co_consts).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


@overload
def step(fn: Callable[P, Awaitable[R]], /) -> StepDef[P, R]: ...
@overload
def step(fn: Callable[P, R], /) -> StepDef[P, R]: ...
@overload
def step(
    *, name: str | None = None, retry: int | RetryPolicy = 1, timeout: float | None = None
) -> Callable[[Callable[P, Any]], StepDef[P, Any]]: ...
def step(
    fn: Callable[P, Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: int | RetryPolicy = 1,
    timeout: float | None = None,
) -> Any:
    """Make ``fn`` (async or sync) a durable step: run once per successful attempt by a
    worker, its result recorded. ``retry``: attempts (an int) or a ``RetryPolicy``;
    ``timeout``: seconds per attempt."""
    policy = RetryPolicy(attempts=retry) if isinstance(retry, int) else retry

    def wrap(f: Callable[P, Any]) -> StepDef[P, Any]:
        return StepDef(f, name=name or f.__name__, retry=policy, timeout=timeout)

    return wrap if fn is None else wrap(fn)


def workflow(
    *,
    name: str | None = None,
    triggers: tuple[Trigger | dict[str, Any], ...] | list[Trigger | dict[str, Any]] = (),
    idempotency_key: str | None = None,
    input: dict[str, Any] | None = None,
    description: str = "",
) -> Callable[[Callable[P, Awaitable[R]]], WorkflowDef[P, R]]:
    """Make an ``async def`` a code workflow. ``triggers`` (subjects, schedules),
    ``idempotency_key`` (a template over ``input``) and ``input`` (a JSON Schema)
    mean what they mean in a manifest."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> WorkflowDef[P, R]:
        workflow_name = name or fn.__name__
        return WorkflowDef(
            fn,
            name=workflow_name,
            triggers=checked_triggers(workflow_name, triggers),
            idempotency_key=idempotency_key,
            input=input,
            description=description,
        )

    return wrap


def sleep(seconds: float) -> Awaitable[None]:
    """A durable sleep: a timer that survives restarts."""
    current("sleep")
    if seconds < 0:
        raise ValueError(f"sleep: {seconds} is negative")
    return Call("sleep", "sleep", float(seconds), returns=None)


def wait_for_signal(name: str, *, timeout: float | None = None, default: Any = _MISSING) -> Any:
    """Wait for signal ``name`` (``natsflow signal ID NAME``) and return its data; a
    signal sent earlier is kept until a wait takes it. After ``timeout`` seconds:
    ``default`` if given, else ``StepFailed`` of kind ``timeout``."""
    current("wait_for_signal")
    return Call("wait", name, None, timeout, default)


def start_child(workflow: str | WorkflowDef[..., Any], input: Any = None) -> Awaitable[Any]:
    """Run ``workflow`` as a child execution and await its output (``StepFailed`` if it
    fails or is cancelled)."""
    ctx = current("start_child")
    name = workflow if isinstance(workflow, str) else workflow.name
    data = storable(input, f"the input of child workflow {name} of workflow {ctx.workflow} is")
    return Call("child", name, data)


def gather(*calls: Awaitable[Any], return_exceptions: bool = False) -> Awaitable[list[Any]]:
    """Run step calls, sleeps, waits and child workflows at once; their results in order.

    Once all have ended: the first failure is raised (``StepFailed``), or with
    ``return_exceptions=True`` each failure takes its call's place in the list (as in
    ``asyncio.gather``), so a fan-out can go on with what succeeded."""
    current("gather")
    for call in calls:
        if not isinstance(call, Call):
            raise TypeError(
                f"gather takes step calls, sleep, wait_for_signal and child workflows,"
                f" not {type(call).__name__}"
            )
    return Gather(tuple(calls), return_exceptions)  # type: ignore[arg-type]


def now() -> float:
    """The workflow's clock: the time it reached this point, the same on every replay."""
    return current("now").now()


def uuid() -> str:
    """A UUID derived from the execution and the call's place: the same on every replay."""
    return current("uuid").uuid()


def patched(name: str) -> bool:
    """True on executions that reach this point with this code (a marker is recorded);
    False on executions that were already past it with the code before the change."""
    return current("patched").patched(name)


class _ReplayLogger:
    """Logs only when the workflow runs forward, not while it replays its history."""

    def __init__(self) -> None:
        import logging

        self._log = logging.getLogger("natsflow.workflow")

    def _emit(self, level: int, msg: str, *args: Any) -> None:
        ctx = CURRENT.get()
        if ctx is not None and ctx.replaying():
            return
        prefix = f"{ctx.workflow} {ctx.execution_id}: " if ctx is not None else ""
        self._log.log(level, prefix + msg, *args)

    def debug(self, msg: str, *args: Any) -> None:
        self._emit(10, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self._emit(20, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._emit(30, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self._emit(40, msg, *args)


logger = _ReplayLogger()


def checked_triggers(
    workflow: str, triggers: tuple[Trigger | dict[str, Any], ...] | list[Trigger | dict[str, Any]]
) -> tuple[Trigger, ...]:
    """``triggers`` as a manifest's are read and checked (durations such as ``"30s"``,
    cron expressions and time zones, one of subject, cron or every): raises
    ``ManifestError`` naming ``@workflow <name>`` and each problem by path."""
    import msgspec
    import orjson

    from natsflow.manifests.loader import parse_manifest

    if not triggers:
        return ()
    # A stand-in manifest: only its triggers are read back (the name is checked apart).
    doc = {
        "name": "code-workflow",
        "steps": {"run": {"action": "noop"}},
        "triggers": [msgspec.to_builtins(t) for t in triggers],
    }
    return parse_manifest(orjson.dumps(doc), "json", f"@workflow {workflow}").triggers
