"""A code app and what is deployed of it: one definition per workflow, of kind code.

An app is a name and the ``@workflow`` and ``@step`` objects of one or more
modules. Each workflow is stored in the workflows bucket like a manifest
(``Workflow`` with ``app`` and ``code`` set): name, triggers, idempotency key,
input schema, and one manifest step per app step (its custom action
``<app>.<step>``, retry and timeout), so start, triggers, schedules, ``ls``,
``show`` and ``history`` go through the service's own paths. ``code`` is a hash
of the workflow's and the steps' code: a change deploys a new version.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from natsflow.code.api import StepDef, WorkflowDef
from natsflow.manifests.custom import RESERVED_NAMESPACES
from natsflow.manifests.schema import Step, Workflow

APP_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"
_APP = re.compile(APP_PATTERN)


def step_action(app: str, step: str) -> str:
    """The custom action of an app's step: ``docs.create-sandbox`` for ``create_sandbox``."""
    return f"{app}.{step.replace('_', '-')}"


@dataclass
class CodeApp:
    """The workflows and steps one process serves, under one app name."""

    name: str
    workflows: dict[str, WorkflowDef[..., Any]] = field(default_factory=dict)
    steps: dict[str, StepDef[..., Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _APP.fullmatch(self.name):
            raise ValueError(
                f"app name {self.name!r}: lowercase letters, digits and -, starting with a"
                " letter, at most 32 characters"
            )
        if self.name in RESERVED_NAMESPACES:  # its steps would be natsflow's actions
            raise ValueError(
                f"app name {self.name!r}: reserved for natsflow's own actions"
                f" ({self.name}.<step> would be one)"
            )

    def add(self, item: WorkflowDef[..., Any] | StepDef[..., Any]) -> None:
        target: dict[str, Any] = self.workflows if isinstance(item, WorkflowDef) else self.steps
        known = target.get(item.name)
        if known is not None and known is not item:
            raise ValueError(f"app {self.name}: two definitions named {item.name!r}")
        target[item.name] = item

    def identity(self) -> str:
        """A hash of every step's identity (any workflow may call any step)."""
        parts = sorted(s.identity() for s in self.steps.values())
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def by_action(self) -> dict[str, StepDef[..., Any]]:
        return {step_action(self.name, s.name): s for s in self.steps.values()}


def load_app(modules: Iterable[str | ModuleType], name: str | None = None) -> CodeApp:
    """The app of ``modules`` (imported by name): every ``@workflow`` and ``@step`` at
    their top level. ``name``: the module's ``NATSFLOW_APP``, else its first part."""
    loaded = [importlib.import_module(m) if isinstance(m, str) else m for m in modules]
    if not loaded:
        raise ValueError("an app needs at least one module")
    app_name = name or getattr(loaded[0], "NATSFLOW_APP", None) or _default_name(loaded[0])
    app = CodeApp(app_name)
    for module in loaded:
        for value in vars(module).values():
            if isinstance(value, WorkflowDef | StepDef):
                app.add(value)
    return app


def _default_name(module: ModuleType) -> str:
    return module.__name__.split(".", 1)[0].replace("_", "-").lower()


def spec_workflow(app: CodeApp, definition: WorkflowDef[..., Any]) -> Workflow:
    """The manifest-shaped definition of ``definition``: what is deployed, and what the
    shared fact code (retry policies, deadlines) reads by step key."""
    steps = {
        s.name: Step(action=step_action(app.name, s.name), retry=s.retry, timeout=s.timeout)
        for s in app.steps.values()
    }
    return Workflow(
        name=definition.name,
        steps=_StepSpecs(steps),
        description=definition.description,
        input=definition.input,
        triggers=definition.triggers,
        idempotency_key=definition.idempotency_key,
        app=app.name,
        code=hashlib.sha256(f"{definition.identity()}|{app.identity()}".encode()).hexdigest()[:16],
    )


def deployable(app: CodeApp, definition: WorkflowDef[..., Any]) -> Workflow:
    """``spec_workflow`` with a plain dict of steps (to encode and store)."""
    spec = spec_workflow(app, definition)
    import msgspec

    return msgspec.structs.replace(spec, steps=dict(spec.steps))


_ENGINE = {
    "~sleep": Step(action="sleep"),
    "~signal": Step(action="wait"),
    "~child": Step(action="workflow"),
}


class _StepSpecs(dict[str, Step]):
    """Step specs by step key: ``name#3`` finds ``name``'s; the engine's own calls
    (``~sleep#2``, ``~signal:x#3``, ``~child:y#4``) find their built-in action's."""

    def __missing__(self, key: str) -> Step:
        base = key.rpartition("#")[0] or key
        if base in self:
            return self[base]
        return _ENGINE.get(base.split(":", 1)[0], Step(action="noop"))
