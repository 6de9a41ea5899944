"""Hypothesis strategies for the pure core: events, JSON-ish values, random DAG workflows.

``st.from_type`` ignores ``Meta`` bounds (an ``Attempt`` could come out as 0),
so every event gets an explicit strategy, registered for ``from_type`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

import orjson
from hypothesis import strategies as st

from natsflow.events.fold import fold
from natsflow.events.messages import AnyInbox, ErrorInfo, Progress, Result, Start, TimerDue
from natsflow.events.model import (
    AnyEvent,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionState,
    ExecutionUnpaused,
    ParentLink,
    SignalConsumed,
    SignalReceived,
    StepAttemptFailed,
    StepCompleted,
    StepDeadlineSet,
    StepFannedOut,
    StepProgressed,
    StepScheduled,
    StepSkipped,
    TimerFired,
    TimerStarted,
    WaitStarted,
)
from natsflow.manifests.decider import react
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow

__all__ = [
    "EVENT_STRATEGIES",
    "Run",
    "any_event",
    "dag_workflows",
    "event_batches",
    "json_values",
    "next_message",
    "simulated_runs",
    "timestamps",
    "worker_output",
]

# --- values ------------------------------------------------------------------

timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=1000)
counts = st.integers(min_value=0, max_value=1000)
short_text = st.text(max_size=12)
_names = st.text(alphabet="abcdefs_0123", min_size=1, max_size=6)
step_keys = st.builds(
    lambda name, item: name if item is None else f"{name}[{item}]", _names, st.none() | _names
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)

json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
"""What JSON can carry: no NaN or infinity, string keys, lists (never tuples)."""

# --- one strategy per event --------------------------------------------------

execution_started = st.builds(
    ExecutionStarted,
    at=timestamps,
    execution_id=short_text,
    workflow=short_text,
    version=short_text,
    input=json_values,
    idempotency_key=st.none() | short_text,
    parent=st.none() | st.builds(ParentLink, execution_id=short_text, step=step_keys),
)
step_scheduled = st.builds(
    StepScheduled,
    at=timestamps,
    step=step_keys,
    attempt=attempts,
    action=st.sampled_from(["noop", "shell", "http", "python"]),
    input=json_values,
    timeout=st.none() | st.floats(min_value=0.001, max_value=3600),
    iteration=counts,
    child=st.none() | short_text,
)
step_progressed = st.builds(
    StepProgressed,
    at=timestamps,
    step=step_keys,
    attempt=attempts,
    message=short_text,
    iteration=counts,
)
step_completed = st.builds(
    StepCompleted,
    at=timestamps,
    step=step_keys,
    attempt=counts,
    output=json_values,
    iteration=counts,
    final=st.booleans(),
)
step_attempt_failed = st.builds(
    StepAttemptFailed,
    at=timestamps,
    step=step_keys,
    attempt=counts,
    error=short_text,
    kind=st.sampled_from(["error", "timeout", "expression", "max_iterations", "for_each"]),
    retry_at=st.none() | timestamps,
    iteration=counts,
)
step_skipped = st.builds(StepSkipped, at=timestamps, step=step_keys, reason=short_text)


@st.composite
def _step_fanned_out(draw: st.DrawFn) -> StepFannedOut:
    parent = draw(_names)
    names = draw(st.lists(_names, unique=True, max_size=4))
    keys = tuple(f"{parent}[{n}]" for n in names)
    needs = tuple(
        tuple(draw(st.lists(st.sampled_from(keys[:i]), unique=True)) if i else ())
        for i in range(len(keys))
    )
    items = tuple(draw(st.lists(json_values, min_size=len(keys), max_size=len(keys))))
    return StepFannedOut(at=draw(timestamps), step=parent, keys=keys, items=items, needs=needs)


step_fanned_out = _step_fanned_out()
timer_started = st.builds(
    TimerStarted,
    at=timestamps,
    timer_id=short_text,
    step=step_keys,
    due=timestamps,
    purpose=st.sampled_from(["retry", "sleep", "repeat", "wait"]),
)
timer_fired = st.builds(TimerFired, at=timestamps, timer_id=short_text, step=step_keys)
execution_completed = st.builds(ExecutionCompleted, at=timestamps, output=json_values)
execution_failed = st.builds(
    ExecutionFailed, at=timestamps, error=short_text, step=st.none() | step_keys
)
execution_cancelled = st.builds(ExecutionCancelled, at=timestamps, reason=short_text)
_key_tuples = st.lists(step_keys, max_size=3).map(tuple)
execution_resumed = st.builds(
    ExecutionResumed,
    at=timestamps,
    retried=_key_tuples,
    rerun=_key_tuples,
    reopened=_key_tuples,
    attempts_before=st.dictionaries(step_keys, counts, max_size=3),
    from_step=st.none() | _names,
)
execution_paused = st.builds(ExecutionPaused, at=timestamps, reason=short_text)
execution_unpaused = st.builds(ExecutionUnpaused, at=timestamps)
step_deadline_set = st.builds(
    StepDeadlineSet,
    at=timestamps,
    step=step_keys,
    attempt=attempts,
    timer_id=short_text,
    due=timestamps,
    kind=st.sampled_from(["timeout", "heartbeat"]),
    iteration=counts,
)

signal_names = st.sampled_from(["go", "approve", "stop"])
signal_received = st.builds(
    SignalReceived,
    at=timestamps,
    name=signal_names,
    data=json_values,
    signal_id=short_text,
    step=st.none() | step_keys,
)
wait_started = st.builds(
    WaitStarted,
    at=timestamps,
    step=step_keys,
    signal=st.none() | signal_names,
    subject=st.none() | st.sampled_from(["pay.1.settled", "orders.*"]),
    input=json_values,
)
signal_consumed = st.builds(
    SignalConsumed, at=timestamps, name=signal_names, step=step_keys, signal_id=short_text
)

EVENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    ExecutionStarted: execution_started,
    StepScheduled: step_scheduled,
    StepProgressed: step_progressed,
    StepCompleted: step_completed,
    StepAttemptFailed: step_attempt_failed,
    StepSkipped: step_skipped,
    StepFannedOut: step_fanned_out,
    TimerStarted: timer_started,
    TimerFired: timer_fired,
    ExecutionCompleted: execution_completed,
    ExecutionFailed: execution_failed,
    ExecutionCancelled: execution_cancelled,
    ExecutionResumed: execution_resumed,
    ExecutionPaused: execution_paused,
    ExecutionUnpaused: execution_unpaused,
    StepDeadlineSet: step_deadline_set,
    SignalReceived: signal_received,
    WaitStarted: wait_started,
    SignalConsumed: signal_consumed,
}
assert set(EVENT_STRATEGIES) == set(get_args(AnyEvent)), "an event has no strategy"

for _cls, _strategy in EVENT_STRATEGIES.items():
    st.register_type_strategy(_cls, _strategy)


def any_event() -> st.SearchStrategy[AnyEvent]:
    """Any one event, of any type, with its fields inside their bounds."""
    return st.one_of(*EVENT_STRATEGIES.values())


def event_batches(max_size: int = 20) -> st.SearchStrategy[tuple[AnyEvent, ...]]:
    return st.lists(any_event(), max_size=max_size).map(tuple)


# --- random DAG workflows ----------------------------------------------------


def _literal(value: Any) -> str:
    """A template whose expression is ``value`` written as a literal (JSON is valid here)."""
    return "${{ " + orjson.dumps(value).decode() + " }}"


@st.composite
def _for_each(draw: st.DrawFn) -> dict[str, Any]:
    """A for_each over literal items: plain ints keyed by index, or keyed items with needs."""
    count = draw(st.integers(min_value=0, max_value=4))
    spec: dict[str, Any]
    if draw(st.booleans()):
        spec = {"items": _literal(list(range(10, 10 + count)))}
    else:
        items: list[dict[str, Any]] = []
        for i in range(count):
            earlier = [item["k"] for item in items]
            needs = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2)) if i else []
            items.append({"k": f"i{i}", "needs": needs})
        spec = {"items": _literal(items), "key": "${{ item.k }}", "needs": "${{ item.needs }}"}
    concurrency = draw(st.none() | st.integers(min_value=1, max_value=2))
    if concurrency is not None:
        spec["concurrency"] = concurrency
    return spec


@st.composite
def dag_workflows(
    draw: st.DrawFn,
    max_steps: int = 8,
    fan_out: bool = True,
    repeat: bool = True,
    sleep: bool = True,
    deadlines: bool = True,
) -> Workflow:
    """A valid workflow of 1..max_steps noop steps ``s0..s{n-1}``, acyclic by construction.

    Each step's ``needs``/``after`` name only earlier steps, and its ``with``
    renders their statuses (and ``item``). Retries are fixed backoff with small
    delays; ``on_failure`` and a literal ``when`` are drawn. Some steps fan out
    over a literal list, repeat until ``loop.output.done`` (bounded), or are
    ``sleep``s. The workflow's output is every step's status.
    """
    size = draw(st.integers(min_value=1, max_value=max_steps))
    steps: dict[str, dict[str, Any]] = {}
    for i in range(size):
        earlier = [f"s{j}" for j in range(i)]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        split = draw(st.integers(min_value=0, max_value=len(deps)))
        step: dict[str, Any] = {
            "action": "noop",
            "retry": {
                "attempts": draw(st.integers(min_value=1, max_value=3)),
                "backoff": "fixed",
                "delay": draw(st.sampled_from([0, 0.5, 1, 2])),
            },
            "on_failure": draw(st.sampled_from(["fail", "continue"])),
        }
        if deps[:split]:
            step["needs"] = deps[:split]
        if deps[split:]:
            step["after"] = deps[split:]
        kind = draw(st.sampled_from(["plain", "plain", "for_each", "repeat", "repeat", "sleep"]))
        sleeping_items = kind == "for_each" and draw(st.integers(min_value=0, max_value=3)) == 0
        if sleep and (kind == "sleep" or sleeping_items):
            step["action"] = "sleep"
            step["with"] = {"duration": draw(st.sampled_from(["0s", "500ms", "3s"]))}
        else:
            # a task's input shows what its dependencies' statuses were when it was sent
            step["with"] = {dep: f"${{{{ steps.{dep}.status }}}}" for dep in deps}
        if kind == "for_each" and fan_out:
            step["for_each"] = draw(_for_each())
            if step["action"] == "noop":
                step["with"]["item"] = "${{ item }}"
        elif kind == "repeat" and repeat:
            step["repeat"] = {
                "until": "${{ loop.output.done }}",
                "max_iterations": draw(st.integers(min_value=1, max_value=4)),
                "sleep": draw(st.sampled_from([0, 1])),
            }
        if deadlines and step["action"] == "noop":
            # engine-kept deadlines: a timeout (plus its grace) and a heartbeat
            timeout = draw(st.sampled_from([None, None, 1, 3]))
            if timeout is not None:
                step["timeout"] = timeout
            heartbeat = draw(st.sampled_from([None, None, 0.5, 2]))
            if heartbeat is not None:
                step["heartbeat"] = heartbeat
        when = draw(st.sampled_from([None, None, None, "${{ true }}", "${{ false }}"]))
        if when is not None:
            step["when"] = when
        steps[f"s{i}"] = step
    statuses = {name: f"${{{{ steps.{name}.status }}}}" for name in steps}
    doc = {"name": "dag", "steps": steps, "output": {"statuses": statuses}}
    return parse_manifest(orjson.dumps(doc), "json", "<dag_workflows>")


# --- simulated executions ----------------------------------------------------

START_AT = 1_000.0
TICK = 0.125  # seconds between two inbox messages


@dataclass
class Run:
    """An execution driven as its actor would: react to one message, fold the events.

    It plays the workers and the timer service too: ``tasks`` are the attempts
    dispatched and not answered yet, ``timers`` the timers started and not due
    yet. ``noise`` bounds the messages that move nothing on (stale results,
    progress), so that every run ends.
    """

    workflow: Workflow
    execution_id: str = "ex-1"
    state: ExecutionState = field(init=False)
    now: float = START_AT
    batches: list[tuple[AnyEvent, ...]] = field(default_factory=list)
    tasks: dict[tuple[str, int, int], StepScheduled] = field(default_factory=dict)
    timers: dict[str, TimerStarted] = field(default_factory=dict)
    answered: list[Result | TimerDue] = field(default_factory=list)
    messages: int = 0
    noise: int = 8
    last_kind: str = ""  # what next_message chose: result, timer, stale or progress

    def __post_init__(self) -> None:
        self.state = ExecutionState(execution_id=self.execution_id)

    @property
    def history(self) -> list[AnyEvent]:
        return [event for batch in self.batches for event in batch]

    def start(self, input: Any = None) -> tuple[AnyEvent, ...]:
        return self.apply(Start(workflow=self.workflow.name, version="v1", input=input))

    def apply(self, message: AnyInbox) -> tuple[AnyEvent, ...]:
        """React to ``message`` at ``now``, fold, and track the tasks and timers it gave."""
        self.messages += 1
        decision = react(self.state, self.workflow, message, self.now)
        events = decision.events
        # The decider folds as it decides: its state must be the fold of its events.
        assert decision.state == fold(events, self.state)
        self.state = decision.state
        if events:
            self.batches.append(events)
        for event in events:
            if isinstance(event, StepScheduled):
                self.tasks[(event.step, event.attempt, event.iteration)] = event
            elif isinstance(event, TimerStarted):
                self.timers[event.timer_id] = event
            elif isinstance(event, StepAttemptFailed) and isinstance(message, TimerDue):
                # a missed deadline: the engine gave up on the attempt, whose late
                # result is noise (a stale result) from now on
                task = self.tasks.pop((event.step, event.attempt, event.iteration), None)
                if task is not None:
                    late = worker_output(task, True)
                    self.answered.append(
                        Result(
                            step=task.step,
                            attempt=task.attempt,
                            iteration=task.iteration,
                            ok=True,
                            output=late,
                        )
                    )
            elif isinstance(event, StepDeadlineSet):
                # a deadline is a timer like any other to the simulated timer service
                self.timers[event.timer_id] = TimerStarted(
                    at=event.at,
                    timer_id=event.timer_id,
                    step=event.step,
                    due=event.due,
                    purpose=event.kind,
                )
        return events


@st.composite
def next_message(draw: st.DrawFn, run: Run) -> AnyInbox | None:
    """What happens next: a worker answers a task, a timer fires, or noise; None when idle.

    Answering a task or firing a timer removes it from the run's outstanding
    sets; firing a timer moves ``now`` to its due time.
    """
    run.now += TICK
    options = []
    if run.tasks:
        options.append("result")
    if run.timers:
        options.append("timer")
    if run.noise > 0 and run.answered:
        options.append("stale")
    if run.noise > 0 and run.tasks:
        options.append("progress")
    if not options:
        return None
    choice = run.last_kind = draw(st.sampled_from(options))
    message: AnyInbox
    if choice == "result":
        key = draw(st.sampled_from(sorted(run.tasks)))
        task = run.tasks.pop(key)
        message = _result(draw, task)
        run.answered.append(message)
    elif choice == "timer":
        timer = run.timers.pop(draw(st.sampled_from(sorted(run.timers))))
        run.now = max(run.now, timer.due)
        message = TimerDue(timer_id=timer.timer_id, step=timer.step)
        run.answered.append(message)
    elif choice == "stale":
        run.noise -= 1
        message = draw(st.sampled_from(run.answered))
        if isinstance(message, Result) and draw(st.booleans()):
            # the same attempt answered again, with the other outcome
            message = Result(
                step=message.step,
                attempt=message.attempt,
                iteration=message.iteration,
                ok=not message.ok,
                output={"stale": True, "done": True},
                error=None if message.ok else ErrorInfo(message="stale"),
            )
    else:
        run.noise -= 1
        task = run.tasks[draw(st.sampled_from(sorted(run.tasks)))]
        text = draw(st.sampled_from(["10%", "50%", "done"]))
        message = Progress(
            step=task.step, attempt=task.attempt, iteration=task.iteration, message=text
        )
    return message


def worker_output(task: StepScheduled, done: bool) -> dict[str, Any]:
    """What the simulated worker returns: the attempt it ran, and ``done`` for repeat steps."""
    return {"step": task.step, "attempt": task.attempt, "iteration": task.iteration, "done": done}


def _result(draw: st.DrawFn, task: StepScheduled) -> Result:
    outcome = draw(st.sampled_from(["ok", "retryable", "terminal", "retry_after"]))
    if outcome == "ok":
        output = worker_output(task, draw(st.booleans()))
        return Result(
            step=task.step, attempt=task.attempt, iteration=task.iteration, ok=True, output=output
        )
    error = ErrorInfo(
        message=f"{task.step} attempt {task.attempt} broke",
        kind="boom",
        retryable=outcome != "terminal",
        retry_after=0.75 if outcome == "retry_after" else None,
    )
    return Result(
        step=task.step, attempt=task.attempt, iteration=task.iteration, ok=False, error=error
    )


@st.composite
def simulated_runs(draw: st.DrawFn, max_steps: int = 6) -> Run:
    """A workflow run to its end with random answers: no checks, just the history."""
    run = Run(draw(dag_workflows(max_steps=max_steps)))
    run.start(input=draw(json_values))
    while (message := draw(next_message(run))) is not None:
        run.apply(message)
    return run
