"""The code decider: a workflow coroutine replayed against its execution's state.

``CodeDecider(app, definition).react(state, message, now)`` is pure like the
manifest decider: the message's facts (``manifests.facts``: results, timers,
signals, cancel, resume), then the workflow is driven as far as the state allows.

Each durable call gets a position (0, 1, ...) in the order the workflow makes it,
and a step key ``<name>#<position>`` (``~sleep#3``, ``~signal:approval#4``,
``~child:entity#5`` for the engine's own). A call whose key the state holds
answers from it (a completed step returns its recorded output without running);
a new one becomes its events (``step_scheduled``, ``timer_started``,
``wait_started``) and the workflow suspends there. A call whose key differs from
the one recorded at its position raises ``NondeterminismError`` (the actor parks
the execution until code that matches is deployed).

Sticky: the suspended coroutine is kept between messages, keyed by execution and
owned by the state object it produced; a state read from the store (after
passivation or a conflict) replays from the start instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from natsflow.code.api import CURRENT, Call, Gather, StepFailed, WorkflowDef
from natsflow.code.definition import CodeApp, spec_workflow
from natsflow.code.ids import child_id
from natsflow.code.values import NotStorable, storable, typed
from natsflow.events.decider import Decision
from natsflow.events.errors import NondeterminismError
from natsflow.events.fold import evolve, fold
from natsflow.events.messages import AnyInbox
from natsflow.events.model import (
    AnyEvent,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionState,
    SignalConsumed,
    StepAttemptFailed,
    StepCompleted,
    StepScheduled,
    StepSkipped,
    StepState,
    TimerStarted,
    WaitStarted,
)
from natsflow.manifests.deadlines import deadlines_for
from natsflow.manifests.facts import facts
from natsflow.manifests.resuming import first_attempt
from natsflow.manifests.scope import timer_id

log = logging.getLogger(__name__)

STICKY_RUNS = 10_000
PATCH_PREFIX = "~patched:"


def call_key(call: Call, position: int) -> str:
    """The step key of a durable call at ``position``."""
    match call.kind:
        case "step":
            return f"{call.name}#{position}"
        case "sleep":
            return f"~sleep#{position}"
        case "wait":
            return f"~signal:{call.name}#{position}"
        case _:
            return f"~child:{call.name}#{position}"


def positions(state: ExecutionState) -> dict[int, str]:
    """The recorded durable calls of ``state`` by position."""
    out: dict[int, str] = {}
    for key in state.steps:
        if key.startswith(PATCH_PREFIX):
            continue  # a patch marker holds no position ("issue#12" is a name, not one)
        _, hash_, number = key.rpartition("#")
        if hash_ and number.isdigit():
            out[int(number)] = key
    return out


class CodeDecider:
    """The decider of one code workflow (see ``natsflow.events.decider``)."""

    def __init__(self, app: CodeApp, definition: WorkflowDef[..., Any]) -> None:
        self.app = app
        self.definition = definition
        self.spec = spec_workflow(app, definition)
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self.replays = 0  # fresh replays (a sticky hit does not count): for tests, metrics

    def react(self, state: ExecutionState, message: AnyInbox, now: float) -> Decision:
        brought = facts(state, self.spec, message, now)
        if not brought:
            return Decision((), state)
        run = self._runs.pop(state.execution_id, None)
        if run is not None and run.state is not state:
            run.close()  # made for another state (a re-read, a conflict): replay instead
            run = None
        after = fold(brought, state)
        if after.status != "running" or after.paused:
            if run is not None and after.status != "running":
                run.close()
            elif run is not None:
                run.state = after
                self._keep(run)
            return Decision(brought, after)
        if run is None:
            self.replays += 1
            run = _Run(self, after, now)
        else:
            run.state, run.now_ = after, now
            run.events = []
        try:
            run.drive()
        except BaseException:
            run.close()
            raise
        if run.state.status == "running":
            self._keep(run)
        else:
            run.close()
        return Decision((*brought, *run.events), run.state)

    def _keep(self, run: _Run) -> None:
        self._runs[run.state.execution_id] = run
        while len(self._runs) > STICKY_RUNS:
            _, old = self._runs.popitem(last=False)
            old.close()

    def kept(self) -> int:
        """How many suspended coroutines are kept now."""
        return len(self._runs)

    def forget(self, execution: str) -> None:
        """Drop the kept coroutine of ``execution`` (the actor passivated it)."""
        run = self._runs.pop(execution, None)
        if run is not None:
            run.close()


class _Run:
    """One execution's workflow coroutine, driven against its state."""

    def __init__(self, decider: CodeDecider, state: ExecutionState, now: float) -> None:
        self.decider = decider
        self.state = state
        self.now_ = now
        self.events: list[AnyEvent] = []
        self.workflow = decider.definition.name
        self.execution_id = state.execution_id
        self.recorded = positions(state)
        self.last_recorded = max(self.recorded, default=-1)
        self.position = 0
        self.clock = state.started_at if state.started_at is not None else now
        self.uuids = 0
        self.patches: dict[str, bool] = {}
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.waiting: tuple[Call | Gather, tuple[int, ...]] | None = None
        self.done = False

    # --- the Context the primitives see -----------------------------------------

    def now(self) -> float:
        return self.clock

    def uuid(self) -> str:
        self.uuids += 1
        digest = hashlib.sha256(f"{self.execution_id}:{self.uuids}".encode()).hexdigest()
        d = digest[:32]
        return f"{d[:8]}-{d[8:12]}-4{d[13:16]}-a{d[17:20]}-{d[20:32]}"

    def replaying(self) -> bool:
        return self.position <= self.last_recorded

    def patched(self, name: str) -> bool:
        if name in self.patches:
            return self.patches[name]
        key = PATCH_PREFIX + name
        if key in self.state.steps:
            value = True
        elif self.replaying():
            value = False  # this execution went past here with the code before the patch
        else:
            self._emit(StepSkipped(at=self.now_, step=key, reason="patched: new code path"))
            value = True
        self.patches[name] = value
        return value

    # --- driving ------------------------------------------------------------------

    def close(self) -> None:
        if self.coro is not None:
            coro, self.coro = self.coro, None
            try:
                coro.close()
            except Exception:
                # Closing runs the workflow's ``finally`` blocks outside a drive: one that
                # awaits a durable call cannot (it raises NotInWorkflow, or RuntimeError on a
                # yield). The coroutine is discarded either way (cancelled, passivated, or
                # replayed afresh), so its error must not fail the cancel or an eviction.
                log.debug(
                    "closing workflow %s of %s", self.workflow, self.execution_id, exc_info=True
                )

    def _emit(self, event: AnyEvent) -> None:
        self.events.append(event)
        self.state = evolve(self.state, event)

    def drive(self) -> None:
        token = CURRENT.set(self)
        try:
            request = self._start() if self.coro is None and not self.done else self.waiting
            while request is not None:
                outcome = self._settle(*request)
                if outcome is None:
                    self.waiting = request
                    return
                request = self._resume(*outcome)
            self.waiting = None
        finally:
            CURRENT.reset(token)

    def _start(self) -> tuple[Call | Gather, tuple[int, ...]] | None:
        definition = self.decider.definition
        try:
            arg = typed(self.state.input, definition.input_type(), f"input of {self.workflow}")
            self.coro = definition.fn(arg) if definition.params else definition.fn()
        except NotStorable as exc:
            self._fail(str(exc), None)
            return None
        return self._resume(None, None)

    def _resume(
        self, value: Any, error: BaseException | None
    ) -> tuple[Call | Gather, tuple[int, ...]] | None:
        assert self.coro is not None
        try:
            yielded = self.coro.throw(error) if error is not None else self.coro.send(value)
        except StopIteration as stop:
            self._complete(stop.value)
            return None
        except NondeterminismError:
            raise
        except StepFailed as exc:
            self._fail(str(exc), exc.step)
            return None
        except Exception as exc:
            self._fail(f"{type(exc).__name__}: {exc}", None)
            return None
        calls = (yielded,) if isinstance(yielded, Call) else getattr(yielded, "calls", None)
        if calls is None:
            self.close()
            self._fail(
                f"workflow {self.workflow} awaited {type(yielded).__name__}, which is not a"
                " durable call (only steps, sleep, wait_for_signal, child workflows and"
                " gather may be awaited in a workflow)",
                None,
            )
            return None
        numbers = tuple(range(self.position, self.position + len(calls)))
        self.position += len(calls)
        for call, number in zip(calls, numbers, strict=True):
            self._check(call, number)
        return yielded, numbers

    def _check(self, call: Call, number: int) -> None:
        recorded = self.recorded.get(number)
        key = call_key(call, number)
        if recorded is not None and recorded != key:
            raise NondeterminismError(
                self.execution_id,
                recorded,
                key.rpartition("#")[0],
                recorded.rpartition("#")[0],
                number,
            )

    def _complete(self, output: Any) -> None:
        self.done, self.coro = True, None
        if self.position <= self.last_recorded:
            extra = self.recorded[min(n for n in self.recorded if n >= self.position)]
            raise NondeterminismError(
                self.execution_id,
                extra,
                "the end of the workflow",
                extra.rpartition("#")[0],
                self.position,
            )
        try:
            value = storable(output, f"workflow {self.workflow} returned")
        except NotStorable as exc:
            self._fail(str(exc), None)
            return
        self._emit(ExecutionCompleted(at=self.now_, output=value))

    def _fail(self, error: str, step: str | None) -> None:
        self.done, self.coro = True, None
        self._emit(ExecutionFailed(at=self.now_, error=error, step=step))

    def _settle(
        self, request: Call | Gather, numbers: tuple[int, ...]
    ) -> tuple[Any, BaseException | None] | None:
        """The value (or error) to resume the workflow with; None while it must wait."""
        calls = (request,) if isinstance(request, Call) else request.calls
        outcomes = [
            self._outcome(call, number) for call, number in zip(calls, numbers, strict=True)
        ]
        if any(o is None for o in outcomes):
            return None
        if isinstance(request, Gather) and request.return_exceptions:
            return [v if e is None else e for v, e in outcomes], None  # type: ignore[misc]
        for _, error in outcomes:  # type: ignore[misc]
            if error is not None:
                return None, error
        values = [o[0] for o in outcomes]  # type: ignore[index]
        return (values[0] if isinstance(request, Call) else values), None

    def _outcome(self, call: Call, number: int) -> tuple[Any, BaseException | None] | None:
        key = call_key(call, number)
        if key not in self.state.steps:
            self._begin(call, key, number)
        self._advance(call, key, self.state.steps[key])
        step = self.state.steps[key]
        if step.status == "completed":
            if step.finished_at is not None:
                self.clock = max(self.clock, step.finished_at)
            if call.kind == "sleep":
                return None, None
            try:
                return typed(step.output, call.returns, f"result of step {call.name}"), None
            except NotStorable as exc:
                return None, exc
        if step.status in ("failed", "skipped", "cancelled"):
            return None, StepFailed(call.name, step.error or step.status, step.kind or "error")
        return None

    def _begin(self, call: Call, key: str, number: int) -> None:
        now = self.now_
        match call.kind:
            case "step":
                spec = self.decider.spec.steps[key]
                attempt = first_attempt(self.state, key)
                self._emit(
                    StepScheduled(
                        at=now,
                        step=key,
                        attempt=attempt,
                        action=spec.action,
                        input=call.input,
                        timeout=spec.timeout,
                    )
                )
                for deadline in deadlines_for(key, spec, now, attempt=attempt, iteration=0):
                    self._emit(deadline)
            case "sleep":
                due = now + float(call.input)
                tid = timer_id(key, "sleep", 0, 1)
                self._emit(TimerStarted(at=now, timer_id=tid, step=key, due=due, purpose="sleep"))
            case "wait":
                params = {"signal": call.name, "timeout": call.timeout}
                self._emit(WaitStarted(at=now, step=key, signal=call.name, input=params))
                if call.timeout is not None:
                    tid = timer_id(key, "wait", 0, 1)
                    due = now + call.timeout
                    self._emit(
                        TimerStarted(at=now, timer_id=tid, step=key, due=due, purpose="wait")
                    )
            case _:
                code = self.decider.app.name if call.name in self.decider.app.workflows else None
                child = child_id(self.execution_id, call, number, code)
                rendered = {"workflow": call.name, "input": call.input}
                self._emit(
                    StepScheduled(
                        at=now,
                        step=key,
                        attempt=first_attempt(self.state, key),
                        action="workflow",
                        input=rendered,
                        child=child,
                    )
                )

    def _advance(self, call: Call, key: str, step: StepState) -> None:
        """Move an unfinished call on: a fired sleep ends, a kept signal answers a wait,
        a fired wait timeout takes its default (or fails), a retry's timer starts the
        next attempt."""
        now = self.now_
        if call.kind == "wait" and step.status == "waiting":
            kept = self.state.signals.get(call.name, ())
            if kept:
                signal = kept[0]
                self._emit(
                    SignalConsumed(at=now, name=call.name, step=key, signal_id=signal.signal_id)
                )
                self._emit(StepCompleted(at=now, step=key, attempt=0, output=signal.data))
            return
        if step.status != "ready":
            return
        if call.kind == "sleep":
            self._emit(StepCompleted(at=now, step=key, attempt=0, output=None))
        elif call.kind == "wait":
            if call.default is not _missing():
                self._emit(StepCompleted(at=now, step=key, attempt=0, output=call.default))
            else:
                error = f"waited {call.timeout:g}s for signal {call.name!r}: timed out"
                self._emit(
                    StepAttemptFailed(at=now, step=key, attempt=0, error=error, kind="timeout")
                )
        else:
            spec = self.decider.spec.steps[key]
            last_failed = bool(step.attempts) and step.attempts[-1].error is not None
            attempt = step.attempt + 1 if last_failed else first_attempt(self.state, key)
            self._emit(
                StepScheduled(
                    at=now,
                    step=key,
                    attempt=attempt,
                    action=step.action,
                    input=step.input,
                    timeout=step.timeout,
                    child=step.child,
                )
            )
            if call.kind == "step":
                for deadline in deadlines_for(key, spec, now, attempt=attempt, iteration=0):
                    self._emit(deadline)


def _missing() -> Any:
    from natsflow.code import api

    return api._MISSING
