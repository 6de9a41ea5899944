"""The decision function, driven by a simulated actor, workers and timer service.

Hypothesis draws a DAG workflow and, at every turn, which outstanding task
answers next (and how), which timer fires, or which stale message is
re-delivered. Every batch ``react`` returns is checked event by event against
the state just before it; the run is checked again at its end.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsflow.events.codec import decode_batch, decode_snapshot, encode_batch, encode_snapshot
from natsflow.events.fold import evolve, fold
from natsflow.events.messages import AnyInbox, Cancel, ErrorInfo, Progress, Result, TimerDue
from natsflow.events.model import (
    TERMINAL_STEP,
    AnyEvent,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    ExecutionState,
    StepAttemptFailed,
    StepCompleted,
    StepDeadlineSet,
    StepFannedOut,
    StepProgressed,
    StepScheduled,
    StepSkipped,
    StepState,
    TimerFired,
    TimerStarted,
)
from natsflow.manifests.decider import backoff, base_name, decide, react
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import RetryPolicy, Step, Workflow
from tests.unit.strategies import Run, dag_workflows, next_message

SETTINGS = settings(max_examples=150, deadline=None)
UNSTARTED = StepState(status="pending")

# --- the checker -------------------------------------------------------------


class Checker:
    """Checks every event of a run against the state it was decided on."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.by_key: defaultdict[str, list[AnyEvent]] = defaultdict(list)

    def spec(self, key: str) -> Step:
        return self.workflow.steps[base_name(key)]

    def batch(self, state: ExecutionState, events: tuple[AnyEvent, ...]) -> None:
        for event in events:
            self.event(state, event)
            state = evolve(state, event)
            step = getattr(event, "step", None)
            if isinstance(step, str) and not isinstance(event, ExecutionFailed):
                self.by_key[step].append(event)

    def event(self, s: ExecutionState, event: AnyEvent) -> None:
        if isinstance(event, ExecutionStarted):
            assert s.status == "pending"
            return
        assert s.status == "running", f"{event!r} after the execution ended ({s.status})"
        match event:
            case StepScheduled():
                self.scheduled(s, event)
            case StepFannedOut():
                assert self.spec(event.step).for_each is not None
                assert event.step not in s.steps
                self.assert_ready(s, event.step)
            case StepSkipped():
                self.skipped(s, event)
            case StepCompleted():
                self.completed(s, event)
            case StepAttemptFailed():
                prev = s.steps.get(event.step)
                assert prev is None or prev.status not in TERMINAL_STEP
                if event.retry_at is not None:
                    assert event.attempt < self.spec(event.step).retry.attempts
            case TimerFired():
                started = [e for e in self.by_key[event.step] if isinstance(e, TimerStarted)]
                assert started
                assert started[-1].timer_id == event.timer_id
                assert event.at >= started[-1].due, "a timer fired before it was due"
            case ExecutionFailed():
                assert event.step is not None
                failed = s.steps[event.step]
                assert failed.status == "failed"
                assert self.spec(event.step).on_failure == "fail"
                assert failed.error is not None
                assert failed.error in event.error
            case ExecutionCompleted():
                for name, spec in self.workflow.steps.items():
                    assert s.steps[name].status in TERMINAL_STEP
                    assert s.steps[name].status != "failed" or spec.on_failure == "continue"
            case StepDeadlineSet():
                step = s.steps[event.step]
                assert step.status == "scheduled"
                assert (event.attempt, event.iteration) == (step.attempt, step.iteration)
                spec = self.spec(event.step)
                period = spec.timeout if event.kind == "timeout" else spec.heartbeat
                assert period is not None
                assert event.due >= event.at + period
            case StepProgressed() | TimerStarted() | ExecutionCancelled():
                pass

    def assert_ready(self, s: ExecutionState, key: str) -> None:
        """Hard dependencies completed, soft ones finished (item-level needs for a child)."""
        step = s.steps.get(key)
        if step is not None and step.parent is not None:
            assert s.steps[step.parent].status == "fanned_out"
            for dep in step.item_needs:
                assert s.steps[dep].status == "completed", f"{key} ran before item {dep}"
            return
        spec = self.spec(key)
        for dep in spec.needs:
            assert s.steps.get(dep, UNSTARTED).status == "completed", f"{key} before {dep}"
        for dep in spec.after:
            assert s.steps.get(dep, UNSTARTED).status in TERMINAL_STEP, f"{key} before {dep}"

    def scheduled(self, s: ExecutionState, event: StepScheduled) -> None:
        spec = self.spec(event.step)
        prev = s.steps.get(event.step)
        # invariant 1: a finished step is never dispatched again
        assert prev is None or prev.status not in TERMINAL_STEP, f"{event.step} re-issued"
        assert spec.action != "sleep"
        self.assert_ready(s, event.step)
        if set(spec.with_) <= {*spec.needs, *spec.after, "item"}:  # as dag_workflows writes it
            expected = {dep: s.steps[dep].status for dep in (*spec.needs, *spec.after)}
            if prev is not None and prev.parent is not None:
                expected["item"] = prev.item
            assert event.input == expected
        assert event.attempt <= spec.retry.attempts
        history = self.by_key[event.step]
        if event.attempt > 1:
            # a retry waits: failure (with retry_at), its timer, the timer firing, then this
            failed, started, fired = history[-3:]
            assert isinstance(failed, StepAttemptFailed)
            assert failed.retry_at is not None
            assert (failed.attempt, failed.iteration) == (event.attempt - 1, event.iteration)
            assert isinstance(started, TimerStarted)
            assert started.purpose == "retry"
            assert isinstance(fired, TimerFired)
            assert fired.timer_id == started.timer_id
            assert event.at >= started.due == failed.retry_at
        elif event.iteration > 0:
            assert spec.repeat is not None
            limit = spec.repeat.max_iterations
            assert limit is None or event.iteration < limit
            looped = [e for e in history if isinstance(e, StepCompleted)][-1]
            assert (looped.final, looped.iteration) == (False, event.iteration - 1)
            if spec.repeat.sleep > 0:
                started, fired = history[-2:]
                assert isinstance(started, TimerStarted)
                assert started.purpose == "repeat"
                assert isinstance(fired, TimerFired)
                assert event.at >= started.due
            else:
                assert history[-1] is looped
        else:
            assert not any(isinstance(e, StepScheduled) for e in history), event

    def skipped(self, s: ExecutionState, event: StepSkipped) -> None:
        prev = s.steps.get(event.step)
        assert prev is None or prev.status not in TERMINAL_STEP
        if prev is not None and prev.parent is not None:
            assert any(s.steps[d].status in ("failed", "skipped") for d in prev.item_needs)
            return
        spec = self.spec(event.step)
        if spec.when is not None and event.reason.startswith("when is false"):
            assert spec.when != "${{ true }}"
            self.assert_ready(s, event.step)
            return
        # skipped as soon as a hard dependency failed or was skipped, never otherwise
        statuses = [s.steps[d].status if d in s.steps else "unstarted" for d in spec.needs]
        assert any(st in ("failed", "skipped") for st in statuses), (event, statuses)

    def completed(self, s: ExecutionState, event: StepCompleted) -> None:
        spec = self.spec(event.step)
        prev = s.steps[event.step]
        assert prev.status not in TERMINAL_STEP
        if prev.status == "fanned_out":
            children = [s.steps[k] for k in prev.children]
            assert all(c.status == "completed" for c in children)
            assert event.output == [c.output for c in children]
        elif spec.action == "sleep":
            assert prev.status == "ready"
        else:
            assert prev.status == "scheduled"
            assert (event.attempt, event.iteration) == (prev.attempt, prev.iteration)
            assert event.final or spec.repeat is not None


def check_final(run: Run, *, cancelled: bool = False) -> None:
    """The run ended, nothing is left to decide, and the step statuses add up."""
    s, wf = run.state, run.workflow
    assert s.status in (("cancelled",) if cancelled else ("completed", "failed"))
    assert decide(s, wf, run.now).events == ()
    assert not run.tasks
    assert not run.timers
    if s.status == "failed":
        assert s.failed_step is not None
        failed = s.steps[s.failed_step]
        assert failed.status == "failed"
        assert wf.steps[s.failed_step].on_failure == "fail"
        assert failed.error is not None
        assert s.error is not None
        assert failed.error in s.error
    if s.status != "completed":
        return
    assert s.output == {"statuses": {name: s.steps[name].status for name in wf.steps}}
    for name, spec in wf.steps.items():
        step = s.steps[name]
        hard_done = all(s.steps[d].status == "completed" for d in spec.needs)
        # a step whose hard dependency did not complete is skipped; soft ones never skip it
        if step.status == "skipped":
            assert step.error is not None
            when_false = step.error.startswith("when is false")
            assert not hard_done or when_false, name
            assert not when_false or (hard_done and spec.when == "${{ false }}"), name
        else:
            assert hard_done, name
            assert spec.when != "${{ false }}", name
        if step.status == "failed":
            assert spec.on_failure == "continue"
        if spec.for_each is not None:
            check_children(s, name, step)
        elif step.status == "completed" and spec.action == "noop":
            assert step.output["step"] == name
            assert step.output["attempt"] == step.attempt
            if spec.repeat is not None:
                assert step.output["done"] is True


def check_children(s: ExecutionState, name: str, parent: StepState) -> None:
    children = [s.steps[k] for k in parent.children]
    for key, child in zip(parent.children, children, strict=True):
        needs = [s.steps[d].status for d in child.item_needs]
        assert (child.status == "skipped") == any(n != "completed" for n in needs), key
    if parent.status == "completed":
        assert all(c.status == "completed" for c in children)
        # the parent's output is its children's outputs, in item order
        assert parent.output == [c.output for c in children]
        for key, child in zip(parent.children, children, strict=True):
            if child.action == "noop":
                assert child.output["step"] == key
    elif parent.status == "failed":
        assert any(c.status != "completed" for c in children)
    else:
        assert (parent.status, children) == ("skipped", [])


def message_bound(wf: Workflow, noise: int) -> int:
    """Messages a run can take at most: each attempt's result and timer, and the noise."""
    total = 2 + noise
    for spec in wf.steps.values():
        items = 4 if spec.for_each is not None else 1
        iterations = (spec.repeat.max_iterations or 1) if spec.repeat is not None else 1
        timers = 2 + (spec.timeout is not None) + (spec.heartbeat is not None)
        total += 2 * items * spec.retry.attempts * iterations * timers
    total += noise  # a progress report may move a heartbeat deadline: one more timer
    return total


def drive(run: Run, data: st.DataObject, checker: Checker, cancel_at: int | None = None) -> None:
    """Run to the end, checking every message; send Cancel after ``cancel_at`` messages."""
    bound = message_bound(run.workflow, run.noise)
    while True:
        message: AnyInbox | None
        if cancel_at is not None and run.messages == cancel_at:
            message, run.last_kind = Cancel(reason="operator"), "cancel"
        else:
            message = data.draw(next_message(run))
        if message is None:
            break
        before = run.state
        events = run.apply(message)
        checker.batch(before, events)
        check_message(run, before, message, events)
        assert run.messages <= bound, "the execution did not end"


def check_message(
    run: Run, before: ExecutionState, message: AnyInbox, events: tuple[AnyEvent, ...]
) -> None:
    wf, after = run.workflow, run.state
    assert decode_batch(encode_batch(events)) == events
    # idempotent: the same message again, right after, changes nothing
    assert react(after, wf, message, run.now).events == (), f"re-delivered {message!r}"
    # react already took every decision the new state allows
    assert decide(after, wf, run.now).events == ()
    running = before.status == "running"
    if run.last_kind == "stale":
        assert events == (), f"stale {message!r} gave {events!r}"
    elif not running:
        assert events == ()
    elif isinstance(message, Result):
        check_result_facts(run, message, events)
    elif isinstance(message, TimerDue) and _is_deadline(message.timer_id):
        check_deadline_facts(run, before, message, events)
    elif isinstance(message, TimerDue):
        assert events[0] == TimerFired(at=run.now, timer_id=message.timer_id, step=message.step)
    elif isinstance(message, Cancel):
        assert events == (ExecutionCancelled(at=run.now, reason=message.reason),)
        assert after.status == "cancelled"


def _is_deadline(timer: str) -> bool:
    return "/deadline/" in timer or "/heartbeat/" in timer


def check_deadline_facts(
    run: Run, before: ExecutionState, message: TimerDue, events: tuple[AnyEvent, ...]
) -> None:
    """A deadline's timer fails the attempt it was set for, if still awaited; else nothing."""
    step = before.steps[message.step]
    kept = {d.timer_id: d for d in step.deadlines} if step.status == "scheduled" else {}
    if message.timer_id not in kept:
        assert events == (), f"an obsolete deadline {message.timer_id} gave {events!r}"
        return
    fact = events[0]
    assert isinstance(fact, StepAttemptFailed)
    assert (fact.step, fact.attempt, fact.iteration) == (message.step, step.attempt, step.iteration)
    assert fact.kind == kept[message.timer_id].kind
    assert run.now >= kept[message.timer_id].due
    spec = run.workflow.steps[base_name(message.step)]
    assert (fact.retry_at is not None) == (step.attempt < spec.retry.attempts)
    # the attempt is over: its result, when it comes, is stale
    late = Result(step=message.step, attempt=step.attempt, iteration=step.iteration, ok=True)
    assert react(run.state, run.workflow, late, run.now).events == ()


def check_result_facts(run: Run, message: Result, events: tuple[AnyEvent, ...]) -> None:
    """A current result's first event is its fact; a failed last attempt ends as on_failure says."""
    spec = run.workflow.steps[base_name(message.step)]
    fact = events[0]
    assert isinstance(fact, StepCompleted | StepAttemptFailed)
    assert (fact.step, fact.attempt, fact.iteration) == (
        message.step,
        message.attempt,
        message.iteration,
    )
    if message.ok:
        # the simulated worker's output always has ``done``: until never fails to evaluate
        assert isinstance(fact, StepCompleted) or fact.kind == "max_iterations", fact
        return
    assert message.error is not None
    assert isinstance(fact, StepAttemptFailed)
    assert fact.error == message.error.message
    retry = message.error.retryable and message.attempt < spec.retry.attempts
    assert (fact.retry_at is not None) == retry
    if retry:
        delay = backoff(spec.retry, message.attempt, message.error.retry_after)
        assert fact.retry_at == run.now + delay
        assert isinstance(events[1], TimerStarted)
        assert events[1].due == fact.retry_at
    elif spec.on_failure == "fail" and run.state.steps[message.step].parent is None:
        assert events[-1] == ExecutionFailed(
            at=run.now, step=message.step, error=f"step {message.step} failed: {fact.error}"
        )


def check_snapshots(run: Run) -> None:
    """Invariant 4: fold(snapshot, tail) == fold(all), also through the snapshot codec."""
    history = run.history
    whole = fold(history)
    assert whole == run.state
    for k in range(len(history) + 1):
        head = fold(history[:k])
        assert fold(history[k:], head) == whole
        restored, covers = decode_snapshot(encode_snapshot(head, k))
        assert covers == k
        assert fold(history[k:], restored) == whole


# --- the properties ----------------------------------------------------------


@SETTINGS
@given(dag_workflows(), st.data())
def test_simulated_executions(workflow: Workflow, data: st.DataObject) -> None:
    run = Run(workflow)
    checker = Checker(workflow)
    before = run.state
    checker.batch(before, run.start(input={"n": 1}))
    drive(run, data, checker)
    check_final(run)
    check_snapshots(run)


@settings(max_examples=75, deadline=None)
@given(dag_workflows(max_steps=5), st.data(), st.integers(min_value=1, max_value=12))
def test_cancel_at_any_point(workflow: Workflow, data: st.DataObject, cancel_at: int) -> None:
    run = Run(workflow)
    checker = Checker(workflow)
    checker.batch(run.state, run.start())
    drive(run, data, checker, cancel_at=cancel_at)
    check_final(run, cancelled=run.state.status == "cancelled")


# --- examples ----------------------------------------------------------------


def workflow(text: str) -> Workflow:
    return parse_manifest(text, "yaml", "test.yaml")


def answer(
    run: Run, step: str, *, ok: bool = True, output: Any = None, **error: Any
) -> tuple[AnyEvent, ...]:
    """The worker answers the one outstanding task of ``step``."""
    (key,) = [k for k in run.tasks if k[0] == step]
    task = run.tasks.pop(key)
    run.now += 1
    return run.apply(
        Result(
            step=step,
            attempt=task.attempt,
            iteration=task.iteration,
            ok=ok,
            output=output,
            error=None if ok else ErrorInfo(message=error.pop("message", "broke"), **error),
        )
    )


def fire(run: Run, step: str) -> tuple[AnyEvent, ...]:
    (tid,) = [t for t, timer in run.timers.items() if timer.step == step]
    timer = run.timers.pop(tid)
    run.now = max(run.now, timer.due)
    return run.apply(TimerDue(timer_id=tid, step=step))


def scheduled(events: tuple[AnyEvent, ...]) -> list[str]:
    return [e.step for e in events if isinstance(e, StepScheduled)]


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy(delay=1.0), [1.0, 2.0, 4.0, 8.0]),
        (RetryPolicy(delay=0.5, multiplier=3.0), [0.5, 1.5, 4.5]),
        (RetryPolicy(delay=1.0, max_delay=5.0), [1.0, 2.0, 4.0, 5.0, 5.0]),
        (RetryPolicy(backoff="fixed", delay=2.0), [2.0, 2.0, 2.0]),
        (RetryPolicy(backoff="fixed", delay=9.0, max_delay=3.0), [3.0, 3.0]),
    ],
)
def test_backoff(policy: RetryPolicy, delays: list[float]) -> None:
    assert [backoff(policy, n) for n in range(1, len(delays) + 1)] == delays


def test_backoff_retry_after_overrides_and_is_capped() -> None:
    policy = RetryPolicy(delay=1.0, max_delay=10.0)
    assert backoff(policy, 3, retry_after=0.25) == 0.25
    assert backoff(policy, 1, retry_after=0.0) == 0.0
    assert backoff(policy, 1, retry_after=60.0) == 10.0


def test_retry_then_success() -> None:
    run = Run(
        workflow(
            """
name: wf
steps:
  a: {action: noop, retry: {attempts: 3, delay: 2s}}
output: "${{ steps.a.output }}"
"""
        )
    )
    assert scheduled(run.start()) == ["a"]
    failed = answer(run, "a", ok=False, message="flaky", kind="io")
    assert [type(e) for e in failed] == [StepAttemptFailed, TimerStarted]
    assert failed[1].due == run.now + 2.0  # type: ignore[union-attr]
    assert scheduled(fire(run, "a")) == ["a"]
    answer(run, "a", ok=False, message="flaky")
    assert run.state.steps["a"].due == run.now + 4.0
    assert [e.attempt for e in fire(run, "a") if isinstance(e, StepScheduled)] == [3]
    done = answer(run, "a", output={"x": 1})
    assert done[-1] == ExecutionCompleted(at=run.now, output={"x": 1})
    assert [a.error for a in run.state.steps["a"].attempts] == ["flaky", "flaky", None]


def test_terminal_error_and_unlisted_kind_are_not_retried() -> None:
    wf = workflow(
        """
name: wf
steps:
  a: {action: noop, retry: {attempts: 5, "on": [io]}, on_failure: continue}
  b: {action: noop, retry: {attempts: 5, "on": [io]}, on_failure: continue}
"""
    )
    run = Run(wf)
    run.start()
    terminal = answer(run, "a", ok=False, message="bad input", kind="io", retryable=False)
    assert isinstance(terminal[0], StepAttemptFailed)
    assert terminal[0].retry_at is None
    other = answer(run, "b", ok=False, message="nope", kind="auth")
    assert isinstance(other[0], StepAttemptFailed)
    assert other[0].retry_at is None
    assert run.state.status == "completed"


def test_for_each_runs_items_in_dependency_order() -> None:
    wf = workflow(
        """
name: wf
steps:
  sync:
    action: noop
    with: {entity: "${{ item.name }}"}
    for_each:
      items: "${{ input.entities }}"
      key: "${{ item.name }}"
      needs: "${{ item.deps }}"
  report:
    action: noop
    needs: [sync]
    with: {synced: "${{ steps.sync.output }}"}
output: "${{ steps.report.output }}"
"""
    )
    entities = [
        {"name": "orders", "deps": ["customers", "products"]},
        {"name": "customers", "deps": []},
        {"name": "products", "deps": ["customers"]},
    ]
    run = Run(wf)
    started = run.start(input={"entities": entities})
    fanned = started[1]
    assert isinstance(fanned, StepFannedOut)
    assert fanned.keys == ("sync[orders]", "sync[customers]", "sync[products]")
    assert scheduled(started) == ["sync[customers]"]
    assert run.tasks[("sync[customers]", 1, 0)].input == {"entity": "customers"}
    assert scheduled(answer(run, "sync[customers]", output="C")) == ["sync[products]"]
    assert scheduled(answer(run, "sync[products]", output="P")) == ["sync[orders]"]
    last = answer(run, "sync[orders]", output="O")
    assert StepCompleted(at=run.now, step="sync", attempt=0, output=["O", "C", "P"]) in last
    assert run.tasks[("report", 1, 0)].input == {"synced": ["O", "C", "P"]}
    done = answer(run, "report", output="R")
    assert done[-1] == ExecutionCompleted(at=run.now, output="R")


def test_for_each_item_failure_skips_dependents_and_fails_parent() -> None:
    wf = workflow(
        """
name: wf
steps:
  each:
    action: noop
    on_failure: continue
    for_each:
      items: "${{ [{'k': 'a', 'n': []}, {'k': 'b', 'n': ['a']}, {'k': 'c', 'n': []}] }}"
      key: "${{ item.k }}"
      needs: "${{ item.n }}"
  after_each: {action: noop, after: [each]}
  needs_each: {action: noop, needs: [each]}
"""
    )
    run = Run(wf)
    assert sorted(scheduled(run.start())) == ["each[a]", "each[c]"]
    failed = answer(run, "each[a]", ok=False, message="down", retryable=False)
    assert StepSkipped(at=run.now, step="each[b]", reason="needs each[a], which failed") in failed
    end = answer(run, "each[c]", output=3)
    assert run.state.steps["each"].status == "failed"
    assert run.state.steps["each"].error == "2 of 3 items did not complete; each[a]: down"
    assert run.state.steps["needs_each"].status == "skipped"
    assert scheduled(end) == ["after_each"]
    answer(run, "after_each")
    assert run.state.status == "completed"


def test_empty_for_each_completes_with_empty_output() -> None:
    run = Run(workflow('name: wf\nsteps:\n  e: {action: noop, for_each: {items: "${{ [] }}"}}\n'))
    events = run.start()
    assert run.state.steps["e"].output == []
    assert isinstance(events[-1], ExecutionCompleted)


def test_for_each_concurrency_limit() -> None:
    run = Run(
        workflow(
            'name: wf\nsteps:\n  e: {action: noop, for_each: {items: "${{ [1, 2, 3] }}", concurrency: 2}}\n'
        )
    )
    assert scheduled(run.start()) == ["e[0]", "e[1]"]
    assert scheduled(answer(run, "e[1]", output=2)) == ["e[2]"]
    answer(run, "e[2]", output=3)
    answer(run, "e[0]", output=1)
    assert run.state.output is None
    assert run.state.steps["e"].output == [1, 2, 3]


def test_when_false_skips_the_step_and_its_hard_dependents() -> None:
    wf = workflow(
        """
name: wf
steps:
  maybe: {action: noop, when: "${{ input.go }}"}
  hard: {action: noop, needs: [maybe]}
  soft: {action: noop, after: [maybe]}
"""
    )
    run = Run(wf)
    events = run.start(input={"go": False})
    skipped = {e.step: e.reason for e in events if isinstance(e, StepSkipped)}
    assert skipped == {
        "maybe": "when is false: ${{ input.go }}",
        "hard": "needs maybe, which skipped",
    }
    assert scheduled(events) == ["soft"]
    answer(run, "soft")
    assert run.state.status == "completed"

    run = Run(wf)
    assert scheduled(run.start(input={"go": True})) == ["maybe"]


REPEAT = """
name: wf
steps:
  poll:
    action: noop
    with: {previous: "${{ loop.output }}", round: "${{ loop.iteration }}"}
    repeat: {until: "${{ loop.output.done }}", max_iterations: 5}
output: "${{ steps.poll.output }}"
"""


def test_repeat_until_loops() -> None:
    run = Run(workflow(REPEAT))
    run.start()
    assert run.tasks[("poll", 1, 0)].input == {"previous": None, "round": 0}
    again = answer(run, "poll", output={"done": False, "page": 1})
    assert again[0] == StepCompleted(
        at=run.now, step="poll", attempt=1, output={"done": False, "page": 1}, final=False
    )
    assert run.tasks[("poll", 1, 1)].input == {
        "previous": {"done": False, "page": 1},
        "round": 1,
    }
    answer(run, "poll", ok=False, message="hiccup")  # retry.attempts defaults to 1
    assert run.state.steps["poll"].status == "failed"
    assert run.state.status == "failed"


def test_repeat_iteration_is_retried() -> None:
    run = Run(
        workflow(REPEAT.replace("    repeat:", "    retry: {attempts: 2, delay: 1s}\n    repeat:"))
    )
    run.start()
    answer(run, "poll", output={"done": False})
    answer(run, "poll", ok=False, message="hiccup")
    assert scheduled(fire(run, "poll")) == ["poll"]
    assert ("poll", 2, 1) in run.tasks
    answer(run, "poll", output={"done": False})
    assert ("poll", 1, 2) in run.tasks
    done = answer(run, "poll", output={"done": True, "page": 3})
    assert done[-1] == ExecutionCompleted(at=run.now, output={"done": True, "page": 3})
    assert run.state.steps["poll"].iteration == 2


def test_repeat_stops_at_max_iterations() -> None:
    run = Run(workflow(REPEAT))
    run.start()
    for _ in range(4):
        assert isinstance(answer(run, "poll", output={"done": False})[0], StepCompleted)
    last = answer(run, "poll", output={"done": False})
    fact = last[0]
    assert isinstance(fact, StepAttemptFailed)
    assert (fact.kind, fact.iteration, fact.retry_at) == ("max_iterations", 4, None)
    assert last[-1] == ExecutionFailed(
        at=run.now,
        step="poll",
        error="step poll failed: repeat.until still false after max_iterations=5",
    )


def test_repeat_sleeps_between_iterations() -> None:
    run = Run(workflow(REPEAT.replace("max_iterations: 5", "max_iterations: 5, sleep: 30s")))
    run.start()
    paused = answer(run, "poll", output={"done": False})
    timer = paused[-1]
    assert isinstance(timer, TimerStarted)
    assert (timer.purpose, timer.due) == ("repeat", run.now + 30)
    assert scheduled(fire(run, "poll")) == ["poll"]
    assert ("poll", 1, 1) in run.tasks


def test_sleep_step_is_a_durable_timer() -> None:
    run = Run(workflow('name: wf\nsteps:\n  nap: {action: sleep, with: {duration: "90s"}}\n'))
    events = run.start()
    timer = events[-1]
    assert isinstance(timer, TimerStarted)
    assert timer.due == run.now + 90
    assert run.apply(TimerDue(timer_id="nap/sleep/0/999", step="nap")) == ()
    done = fire(run, "nap")
    assert isinstance(done[-1], ExecutionCompleted)


def test_cancel_ends_the_execution_and_later_results_are_ignored() -> None:
    wf = workflow(
        "name: wf\nsteps:\n  a: {action: noop, retry: {attempts: 3}}\n  b: {action: noop}\n"
    )
    run = Run(wf)
    run.start()
    answer(run, "a", ok=False, message="flaky")
    cancelled = run.apply(Cancel(reason="user asked"))
    assert cancelled == (ExecutionCancelled(at=run.now, reason="user asked"),)
    assert (run.state.status, run.state.error) == ("cancelled", "user asked")
    assert answer(run, "b", output=1) == ()
    assert fire(run, "a") == ()
    assert run.apply(Progress(step="b", attempt=1, message="50%")) == ()
    assert run.apply(Cancel()) == ()
    assert decide(run.state, wf, run.now).events == ()


def test_progress_is_recorded_once() -> None:
    run = Run(workflow("name: wf\nsteps:\n  a: {action: noop}\n"))
    run.start()
    report = Progress(step="a", attempt=1, message="50%")
    assert run.apply(report) == (StepProgressed(at=run.now, step="a", attempt=1, message="50%"),)
    assert run.apply(report) == ()
    assert run.state.steps["a"].progress == "50%"
    assert len(run.apply(Progress(step="a", attempt=1, message="60%"))) == 1
    assert run.apply(Progress(step="a", attempt=2, message="70%")) == ()


@pytest.mark.parametrize("needs", [["slow", "broken"], ["broken", "slow"]])
def test_a_failed_hard_dependency_skips_at_once_whatever_the_order(needs: list[str]) -> None:
    run = Run(
        workflow(
            f"""
name: wf
steps:
  slow: {{action: noop}}
  broken: {{action: noop, on_failure: continue}}
  last: {{action: noop, needs: {needs}}}
"""
        )
    )
    run.start()
    events = answer(run, "broken", ok=False, message="down")
    assert events[-1] == StepSkipped(at=run.now, step="last", reason="needs broken, which failed")
    assert answer(run, "slow")[-1] == ExecutionCompleted(at=run.now)


def test_expression_error_in_an_item_skips_a_long_chain_of_items() -> None:
    """Each skip settles one item per round: a long chain must still settle in one react."""
    items = [{"k": f"i{n}", "n": [f"i{n - 1}"] if n else []} for n in range(30)]
    wf = workflow(
        """
name: wf
steps:
  chain:
    action: noop
    on_failure: continue
    with: {x: "${{ item.missing }}"}
    for_each: {items: "${{ input.items }}", key: "${{ item.k }}", needs: "${{ item.n }}"}
"""
    )
    run = Run(wf)
    events = run.start(input={"items": items})
    assert run.state.status == "completed", events[-3:]
    assert run.state.steps["chain"].status == "failed"
    assert sum(isinstance(e, StepSkipped) for e in events) == 29


def test_for_each_after_orders_items_without_blocking_them() -> None:
    """``after`` waits for an item to finish however it ended; ``needs`` blocks on failure."""
    wf = workflow(
        """
name: wf
steps:
  each:
    action: noop
    on_failure: continue
    for_each:
      items: "${{ [{'k': 'a', 'n': [], 'a': []}, {'k': 'b', 'n': [], 'a': ['a']},
        {'k': 'c', 'n': ['a'], 'a': []}] }}"
      key: "${{ item.k }}"
      needs: "${{ item.n }}"
      after: "${{ item.a }}"
"""
    )
    run = Run(wf)
    assert scheduled(run.start()) == ["each[a]"]
    failed = answer(run, "each[a]", ok=False, message="down", retryable=False)
    assert scheduled(failed) == ["each[b]"]
    assert StepSkipped(at=run.now, step="each[c]", reason="needs each[a], which failed") in failed
    answer(run, "each[b]", output="B")
    assert run.state.steps["each[b]"].status == "completed"


def test_for_each_after_names_only_known_items() -> None:
    wf = workflow(
        """
name: wf
steps:
  each:
    action: noop
    for_each:
      items: "${{ ['a'] }}"
      key: "${{ item }}"
      after: "${{ ['zz'] }}"
"""
    )
    run = Run(wf)
    started = run.start()
    assert run.state.steps["each"].status == "failed"
    assert "for_each.after names unknown item keys ['zz']" in str(run.state.steps["each"].error)
    assert started
