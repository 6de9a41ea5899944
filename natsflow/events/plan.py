"""Every step of an execution's plan, as ``show`` tells it: a status and the reason for it.

The fold knows only the steps that began. The plan (the definition's steps, with
their ``needs`` and ``after``) adds the others, so that ``show`` tells the whole
story of an execution:

- ``pending``: not begun yet, in a running execution (reason: what it waits for);
- ``blocked``: it cannot run because a hard dependency (``needs``, or a fan-out
  item's needs) failed or is blocked itself: the decider skipped it
  (``needs X, which failed``), or the execution failed before reaching it; the
  reason names the step that failed (``household failed``, or
  ``campus failed (via household)`` further down the chain);
- ``skipped``: its ``when`` was false or a dependency was skipped (reason: why);
- ``running``: an attempt is with a worker that has reported progress
  (``scheduled`` while it has not);
- ``not_run``: the execution ended (failed elsewhere, cancelled) before it began;
- any other status is the fold's, passed on as it is (a status a newer fold adds
  needs no change here).

Pure: the state and the plan in, each step's status out.
"""

from __future__ import annotations

import msgspec

from natsflow.events.model import TERMINAL_EXECUTION, TERMINAL_STEP, ExecutionState, StepState

PENDING = "pending"
BLOCKED = "blocked"
RUNNING = "running"
SKIPPED = "skipped"
NOT_RUN = "not_run"

# A dependency in one of these will never complete: what needs it is blocked.
_BLOCKING = frozenset({"failed", BLOCKED})
# A dependency in one of these has finished: nothing waits for it any more.
_FINISHED = TERMINAL_STEP | {BLOCKED, NOT_RUN}


class PlannedStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a workflow definition, as far as ``show`` needs it."""

    name: str
    action: str = ""
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


Plan = tuple[PlannedStep, ...]


class Told(msgspec.Struct, frozen=True, kw_only=True):
    """A step's status as ``show`` tells it, and why (None: nothing to add).

    ``cause`` is, for a blocked step, the step whose failure blocks it.
    """

    status: str
    reason: str | None = None
    cause: str | None = None


def tell(state: ExecutionState, plan: Plan = ()) -> dict[str, Told]:
    """Each step of ``state`` and ``plan``, in display order (the plan's order, each
    fan-out parent followed by its children, then any step the plan does not name)."""
    return _Teller(state, plan).all()


def step_order(state: ExecutionState, plan: Plan = ()) -> list[str]:
    """The keys of every step, planned or begun: each planned step followed by its fan-out
    children, then the steps the plan does not name (a definition that is gone)."""
    order: dict[str, None] = {}

    def add(key: str) -> None:
        order[key] = None
        step = state.steps.get(key)
        for child in step.children if step is not None else ():
            order[child] = None

    for planned in plan:
        add(planned.name)
    for key, step in state.steps.items():
        if key not in order and step.parent is None:
            add(key)
    for key in state.steps:  # a child whose parent lost track of it: still shown
        order.setdefault(key, None)
    return list(order)


def execution_error(state: ExecutionState) -> str | None:
    """The execution's error, naming the failed step when the error itself does not."""
    error, step = state.error, state.failed_step
    if error is not None and step is not None and step not in error:
        return f"step {step} failed: {error}"
    return error


def short_name(key: str, parent: str | None) -> str:
    """``key`` as a sibling of a fan-out child of ``parent`` reads it: ``sync[household]``
    is ``household`` among the children of ``sync``."""
    if parent is not None and key.startswith(f"{parent}[") and key.endswith("]"):
        return key[len(parent) + 1 : -1]
    return key


class _Teller:
    def __init__(self, state: ExecutionState, plan: Plan) -> None:
        self.state = state
        self.specs = {planned.name: planned for planned in plan}
        self.plan = plan
        self.told: dict[str, Told] = {}
        self.visiting: set[str] = set()

    def all(self) -> dict[str, Told]:
        return {key: self.story(key) for key in step_order(self.state, self.plan)}

    def story(self, key: str) -> Told:
        if key in self.told:
            return self.told[key]
        if key in self.visiting:  # a cycle: a validated plan has none, but never loop
            return Told(status=PENDING)
        self.visiting.add(key)
        told = self._story(key, self.state.steps.get(key))
        self.visiting.discard(key)
        self.told[key] = told
        return told

    def _story(self, key: str, step: StepState | None) -> Told:
        parent = step.parent if step is not None else None
        if step is None or step.status in (PENDING, SKIPPED):
            for dep in self._hard(key, step):
                if (dep_told := self.story(dep)).status in _BLOCKING:
                    return _blocked(dep, dep_told, parent)
        if step is None or step.status == PENDING:
            if self.state.status in TERMINAL_EXECUTION:
                return Told(status=NOT_RUN, reason=self._ended())
            deps = (*self._hard(key, step), *self._soft(key, step))
            waiting = [short_name(d, parent) for d in deps if self.story(d).status not in _FINISHED]
            return Told(
                status=PENDING, reason=f"waits for {', '.join(waiting)}" if waiting else None
            )
        if step.status == SKIPPED:
            return Told(status=SKIPPED, reason=step.error)
        if step.status == "scheduled" and step.progress is not None:
            return Told(status=RUNNING)
        return Told(status=step.status)

    def _hard(self, key: str, step: StepState | None) -> tuple[str, ...]:
        if step is not None and step.parent is not None:
            return step.item_needs
        spec = self.specs.get(key)
        return spec.needs if spec is not None else ()

    def _soft(self, key: str, step: StepState | None) -> tuple[str, ...]:
        spec = self.specs.get(key)
        return spec.after if spec is not None and (step is None or step.parent is None) else ()

    def _ended(self) -> str:
        state = self.state
        if state.status == "failed" and state.failed_step is not None:
            return f"the execution failed at {state.failed_step} before it began"
        if state.status == "cancelled":
            return "the execution was cancelled before it began"
        return f"the execution {state.status} before it began"


def _blocked(dep: str, dep_told: Told, parent: str | None) -> Told:
    """Blocked by ``dep`` (failed, or blocked itself): the reason names the failed step."""
    cause = dep if dep_told.status == "failed" else (dep_told.cause or dep)
    reason = f"{short_name(cause, parent)} failed"
    if cause != dep:
        reason += f" (via {short_name(dep, parent)})"
    return Told(status=BLOCKED, reason=reason, cause=cause)
