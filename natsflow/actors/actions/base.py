"""The action interface and `ActionRegistry`: step action names to their code."""

from __future__ import annotations

from typing import Any

from natsflow.actors.actions._context import Action, ActionContext, PythonFunction
from natsflow.actors.actions._http import http
from natsflow.actors.actions._nats import nats_request
from natsflow.actors.actions._python import python_action
from natsflow.actors.actions._shell import shell
from natsflow.events.errors import TerminalStepError
from natsflow.manifests.actions import HTTP, NATS_REQUEST, NOOP, PYTHON, SHELL, worker_actions

__all__ = [
    "Action",
    "ActionContext",
    "ActionRegistry",
    "PythonFunction",
    "builtin_registry",
    "noop",
]


class ActionRegistry:
    """Action names (``shell``, ``http``, ...) and ``python`` function names to code.

    An explicit object, built once at start-up and handed to the worker runtime;
    there is no module-level registry to mutate.
    """

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        self._functions: dict[str, PythonFunction] = {}

    def register(self, name: str, action: Action) -> None:
        """Add an action; ``ValueError`` if the name is taken."""
        if name in self._actions:
            raise ValueError(f"action {name!r} is already registered")
        self._actions[name] = action

    def register_python(self, name: str, fn: PythonFunction) -> None:
        """Add a callable for the ``python`` action, called as ``fn(ctx, args)``.

        ``fn`` may be sync (run in a worker thread) or async (awaited); ``args`` is
        the step's ``with.args`` mapping. ``ValueError`` if the name is taken.
        """
        if not callable(fn):
            raise TypeError(f"python function {name!r}: {fn!r} is not callable")
        if name in self._functions:
            raise ValueError(f"python function {name!r} is already registered")
        self._functions[name] = fn

    def get(self, action: str) -> Action:
        """The action called ``action``; `TerminalStepError` (kind ``not_found``) if none."""
        try:
            return self._actions[action]
        except KeyError:
            raise TerminalStepError(
                f"unknown action {action!r}; known: {', '.join(self.actions()) or 'none'}",
                kind="not_found",
            ) from None

    def function(self, name: str) -> PythonFunction:
        """The python function ``name``; `TerminalStepError` (kind ``not_found``) if none."""
        try:
            return self._functions[name]
        except KeyError:
            raise TerminalStepError(
                f"python: unknown function {name!r};"
                f" registered: {', '.join(self.functions()) or 'none'}",
                kind="not_found",
            ) from None

    def actions(self) -> tuple[str, ...]:
        """Registered action names, sorted."""
        return tuple(sorted(self._actions))

    def functions(self) -> tuple[str, ...]:
        """Registered python function names, sorted."""
        return tuple(sorted(self._functions))


async def noop(ctx: ActionContext, params: dict[str, Any]) -> Any:
    """Output the step's ``with`` mapping as is, or ``None`` when it is empty."""
    return params or None


def builtin_registry() -> ActionRegistry:
    """A registry with exactly the catalogue's worker actions (`worker_actions`).

    ``python`` resolves names in this same registry: add callables with
    `ActionRegistry.register_python`.
    """
    registry = ActionRegistry()
    code: dict[str, Action] = {
        NOOP.name: noop,
        SHELL.name: shell,
        HTTP.name: http,
        NATS_REQUEST.name: nats_request,
        PYTHON.name: python_action(registry.function),
    }
    catalogue = worker_actions()
    if set(code) != set(catalogue):  # a catalogue entry without code, or code without one
        raise RuntimeError(
            f"built-in actions {sorted(code)} do not match the catalogue's worker actions"
            f" {sorted(catalogue)}"
        )
    for name in catalogue:
        registry.register(name, code[name])
    return registry
