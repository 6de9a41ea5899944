"""Record the golden histories of the example workflows.

    .venv/bin/python -m tests.histories.record            # (re)write tests/histories/*.json
    .venv/bin/python -m tests.histories.record --check    # exit 1 if a file would change
    .venv/bin/python -m tests.histories.record dag        # only some workflows

Each example manifest (``manifests/examples/*.yaml``) runs once in a simulated
actor: the real ``ManifestDecider`` decides, on a simulated clock that starts
at ``T0`` and moves only from one delivery to the next, and the commands of
each decision (``natsflow.events.commands``) are carried out as the actor
would: a task runs the REAL built-in action (``noop``, ``shell`` as a child
process, ``python`` with the examples' callables from
``natsflow.actors.examples``) and its result comes back ``DURATIONS[action]``
later; a timer's ``TimerDue`` comes back at its due time; a cancelled timer
never fires. Every message goes through its JSON codec first, as from the wire.

A ``workflow`` step's child runs the same way, in a simulation of its own that
starts when the parent's ``StartChild`` is carried out (on the same clock) and
runs to its end at once: a child depends on nothing its parent does after
starting it. Its ``NotifyParent`` comes back to the parent as the
``child_ended`` the engine would send, at the simulated time the child ended.
Only the parent's decisions are recorded in its file; a child workflow that is
an example itself (``entity-sync``) has a golden history of its own.

Code workflows (``CODE_APPS``: ``examples.code.sync_docs``) are recorded the same
way with their ``CodeDecider``, their steps run by the app's step registry, into
``tests/histories/code/<workflow>.json`` (version ``golden``: the code hash
follows the bytecode, so it is not recorded).

Some deliveries change nothing, so that replay covers them too: the first
task's result arrives twice, so do its progress report (the examples print no
``[PROGRESS]`` lines, so it is the one a worker may send) and the first timer
that fires; a retried attempt's result comes again after its retry has
started; once the execution has ended, its ``Start`` comes again and a
``Cancel`` comes too late.

The same code records the same bytes (``--check`` proves it). Re-record only
when the decisions are meant to change (an example changed, a new decision
rule) and say so in the commit: a history that no longer replays is what
these files are for.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, assert_never

import anyio
import msgspec
from msgspec.structs import replace

from natsflow.actors import examples
from natsflow.actors.actions import ActionContext, ActionRegistry, builtin_registry
from natsflow.actors.worker import run_attempt
from natsflow.events.commands import (
    CancelChild,
    CancelTasks,
    CancelTimers,
    DispatchTask,
    ListenFor,
    NotifyParent,
    StartChild,
    StartTimer,
    StopListening,
    WriteSummary,
    commands_for,
)
from natsflow.events.decider import Decider
from natsflow.events.messages import (
    AnyInbox,
    Cancel,
    ChildEnded,
    ErrorInfo,
    Progress,
    Result,
    Start,
    TimerDue,
    idempotency_key,
    inbox_decoder,
    json_encoder,
)
from natsflow.events.model import INITIAL, TERMINAL_EXECUTION, ParentLink, TimerStarted
from natsflow.events.replay import RecordedDecision, replay
from natsflow.manifests.decider import ManifestDecider
from natsflow.manifests.loader import encode_workflow, load_manifest, manifest_version
from natsflow.manifests.schema import Workflow
from tests.histories.golden import EXAMPLES, FORMAT, History, code_path_of, encode, path_of

T0 = 1767225600.0  # 2026-01-01T00:00:00Z: a fixed clock, so every run records the same file
# The input each example is started with.
INPUTS: dict[str, Any] = {
    "hello": {"name": "Ada"},
    "dag": {},
    "paginate": {"pages": 3},
    "sync-orchestrator": {"organisation": "acme", "sync_type": "full"},
    "entity-sync": {"organisation": "acme", "entity": "household", "pages": 3},
    "sync_docs": {"repo": "acme/docs", "sources": ["intro.md", "api.md"]},
}
# Code workflows recorded too (module -> workflow), into tests/histories/code/.
CODE_APPS = {"examples.code.sync_docs": "sync_docs"}
CODE_VERSION = "golden"
# How long an attempt takes on the simulated clock, by action.
DURATIONS = {"noop": 0.01, "python": 0.05, "shell": 0.25}
# The gap between a delivery and its repeat, and before the late ones after the end.
AGAIN = 0.001
LATE = 1.0


class Simulation:
    """One execution: the decider, its agenda of deliveries, and what it decided."""

    def __init__(
        self,
        workflow: Workflow,
        registry: ActionRegistry,
        execution_id: str,
        workflows: dict[str, Workflow] | None = None,
        decider: Decider | None = None,
    ) -> None:
        self.decider = decider or ManifestDecider(workflow)
        self.registry = registry
        self.workflows = workflows or {}  # what a ``workflow`` step may start, by name
        self.report: tuple[float, NotifyParent] | None = None  # a child's end, for its parent
        self.state = replace(INITIAL, execution_id=execution_id)
        self.decisions: list[RecordedDecision] = []
        self._agenda: list[tuple[float, int, AnyInbox]] = []
        self._sequence = 0
        self._cancelled: set[str] = set()
        self._repeated: set[str] = set()  # which no-op deliveries were added already

    def deliver(self, at: float, message: AnyInbox) -> None:
        self._sequence += 1  # ties go in the order they were sent
        heapq.heappush(self._agenda, (at, self._sequence, message))

    async def run(self, start: Start, at: float = T0) -> None:
        self.deliver(at, start)
        while self._agenda:
            now, _, message = heapq.heappop(self._agenda)
            if isinstance(message, TimerDue) and message.timer_id in self._cancelled:
                continue
            await self._handle(now, message)

    async def _handle(self, now: float, sent: AnyInbox) -> None:
        message = inbox_decoder.decode(json_encoder.encode(sent))  # as it comes off the wire
        before = self.state
        decision = self.decider.react(before, message, now)
        self.decisions.append(RecordedDecision(message=message, now=now, events=decision.events))
        self.state = decision.state
        for command in commands_for(before, decision.state, decision.events):
            match command:
                case DispatchTask():
                    await self._dispatch(now, command)
                case StartTimer():
                    self.deliver(
                        command.due, TimerDue(timer_id=command.timer_id, step=command.step)
                    )
                case CancelTimers():
                    self._cancelled.update(
                        s.timer_id for s in decision.state.steps.values() if s.timer_id
                    )
                case WriteSummary() | ListenFor() | StopListening():
                    pass  # the ls row, subject waits: nothing the recorded workflows hear
                case CancelTasks():
                    pass  # a notice to workers: nothing the execution hears back
                case StartChild():
                    await self._start_child(now, command)
                case NotifyParent():
                    self.report = self.report or (now, command)
                case CancelChild():
                    # A child runs to its end when it starts (see the module docstring), so
                    # a cancel finds it ended, and the engine's cancel of an ended
                    # execution changes nothing: nothing to play.
                    pass
                case _:
                    assert_never(command)
        self._repeat(now, message, decision.events != (), before.status)

    def _once(self, what: str) -> bool:
        first = what not in self._repeated
        self._repeated.add(what)
        return first

    def _repeat(self, now: float, message: AnyInbox, changed: bool, before: str) -> None:
        """Schedule the deliveries that change nothing (see the module docstring)."""
        match message:
            case Result() if changed and self._once("result"):
                self.deliver(now + AGAIN, message)
            case TimerDue() if changed and self._once("timer"):
                self.deliver(now + AGAIN, message)
            case Progress() if changed and self._once("progress"):
                self.deliver(now + AGAIN, message)
            case ChildEnded() if changed and self._once("child"):
                self.deliver(now + AGAIN, message)
        if isinstance(message, Result) and not message.ok and self._once("failed result"):
            retry = [e for e in self.decisions[-1].events if isinstance(e, TimerStarted)]
            if retry:  # once the retry's next attempt is out, this one is stale
                self.deliver(retry[0].due + AGAIN, message)
        if before not in TERMINAL_EXECUTION and self.state.status in TERMINAL_EXECUTION:
            start = self.decisions[0].message
            self.deliver(now + LATE, start)
            self.deliver(now + 2 * LATE, Cancel(reason="too late: it has ended"))

    async def _start_child(self, now: float, command: StartChild) -> None:
        """Run the child to its end in a simulation of its own, from ``now``; its report
        comes back as the engine's ``child_ended`` (``natsflow.actors.children.notify``)."""
        workflow = self.workflows.get(command.workflow)
        if workflow is None:
            raise RuntimeError(f"{command.workflow}: not an example, so no child can start")
        child = Simulation(workflow, self.registry, command.child, self.workflows)
        parent = ParentLink(execution_id=command.execution_id, step=command.step)
        version = manifest_version(workflow)
        await child.run(
            Start(workflow=workflow.name, version=version, input=command.input, parent=parent),
            at=now,
        )
        if child.report is None:
            raise RuntimeError(f"{command.child}: the child ended without telling its parent")
        at, ended = child.report
        error = None
        if ended.status != "completed":
            text = ended.error or f"{command.child} {ended.status}"
            error = ErrorInfo(message=text, kind=f"child_{ended.status}", retryable=False)
        report = ChildEnded(
            step=command.step,
            child=command.child,
            status=ended.status,
            output=ended.output,
            error=error,
        )
        self.deliver(at, report)

    async def _dispatch(self, now: float, task: DispatchTask) -> None:
        reports: list[str] = []

        async def report_progress(text: str) -> None:
            reports.append(text)

        if self._once("task"):
            reports.append(f"working on {task.step}")
        result = await attempt(self.registry, task, report_progress)
        took = DURATIONS.get(task.action, 0.1)
        for text in reports:
            progress = Progress(
                step=task.step, attempt=task.attempt, iteration=task.iteration, message=text
            )
            self.deliver(now + took / 2, progress)
        self.deliver(now + took, result)


async def attempt(
    registry: ActionRegistry, task: DispatchTask, report_progress: Callable[[str], Awaitable[None]]
) -> Result:
    """Run one attempt with the real action, as a worker does (``run_attempt``)."""
    ctx = ActionContext(
        execution_id=task.execution_id,
        step=task.step,
        attempt=task.attempt,
        idempotency_key=idempotency_key(task.execution_id, task.step, task.attempt, task.iteration),
        report_progress=report_progress,
    )
    return await run_attempt(registry, task, ctx)


async def record(workflow: Workflow, workflows: dict[str, Workflow] | None = None) -> History:
    """Run ``workflow`` in a simulation and return its history, checked by a replay;
    its ``workflow`` steps start the children named in ``workflows``."""
    registry = builtin_registry()
    examples.register(registry)
    execution_id = f"{workflow.name}-golden"
    version = manifest_version(workflow)
    simulation = Simulation(workflow, registry, execution_id, workflows)
    await simulation.run(
        Start(workflow=workflow.name, version=version, input=INPUTS.get(workflow.name))
    )
    state = simulation.state
    if state.status != "completed":
        raise RuntimeError(f"{workflow.name}: the recorded execution ended {state.status}")
    if replay(simulation.decider, execution_id, simulation.decisions) != state:
        raise RuntimeError(f"{workflow.name}: the recording does not replay to its own state")
    return History(
        format=FORMAT,
        workflow=workflow.name,
        version=version,
        manifest=msgspec.Raw(encode_workflow(workflow)),
        execution_id=execution_id,
        decisions=tuple(simulation.decisions),
        final_state=state,
    )


async def record_code(module: str) -> History:
    """Run the code app ``module``'s workflow (its one, or ``CODE_APPS``' choice) in a
    simulation, its steps run for real by the app's step registry (sandboxes of
    sync_docs in a temporary directory); its history, checked by a replay."""
    from natsflow.actors.apps import step_registry
    from natsflow.code import load_app
    from natsflow.code.definition import deployable
    from natsflow.code.ids import code_execution_id
    from natsflow.code.replay import CodeDecider

    app = load_app([module])
    name = CODE_APPS[module]
    definition = app.workflows[name]
    execution_id = code_execution_id(app.name, f"{name}-golden")
    # The code hash follows the bytecode (a docstring, a Python version): not recorded,
    # so the file changes only when the decisions do.
    spec = replace(deployable(app, definition), code=CODE_VERSION)
    decider = CodeDecider(app, definition)
    with tempfile.TemporaryDirectory() as sandboxes:
        os.environ["NATSFLOW_SANDBOXES"] = sandboxes
        try:
            simulation = Simulation(spec, step_registry(app), execution_id, decider=decider)
            await simulation.run(Start(workflow=name, version=CODE_VERSION, input=INPUTS[name]))
        finally:
            del os.environ["NATSFLOW_SANDBOXES"]
    state = simulation.state
    if state.status != "completed":
        raise RuntimeError(f"{name}: the recorded execution ended {state.status}: {state.error}")
    if replay(CodeDecider(app, definition), execution_id, simulation.decisions) != state:
        raise RuntimeError(f"{name}: the recording does not replay to its own state")
    return History(
        format=FORMAT,
        workflow=name,
        version=CODE_VERSION,
        manifest=msgspec.Raw(encode_workflow(spec)),
        execution_id=execution_id,
        decisions=tuple(simulation.decisions),
        final_state=state,
        app=module,
    )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.histories.record", description=__doc__)
    parser.add_argument("workflows", nargs="*", help="example names (default: all)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on a change")
    args = parser.parse_args(argv)
    manifests = {path.stem: path for path in sorted(EXAMPLES.glob("*.yaml"))}
    unknown = set(args.workflows) - set(manifests)
    if unknown:
        parser.error(
            f"no example called {', '.join(sorted(unknown))}; known: {', '.join(manifests)}"
        )
    workflows = {name: load_manifest(path) for name, path in manifests.items()}
    changed = 0
    histories = [await record(workflows[name], workflows) for name in args.workflows or manifests]
    if not args.workflows:
        histories.extend([await record_code(app) for app in CODE_APPS])
    for history in histories:
        path = code_path_of(history.workflow) if history.app else path_of(history.workflow)
        data = encode(history)
        old = path.read_bytes() if path.exists() else None
        verdict = "unchanged" if old == data else ("new" if old is None else "changed")
        changed += verdict != "unchanged"
        print(
            f"{path.relative_to(EXAMPLES.parents[1])}: {len(history.decisions)} decisions, {verdict}"
        )
        if not args.check and verdict != "unchanged":
            path.write_bytes(data)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
