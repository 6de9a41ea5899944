"""The action catalogue: each built-in action declared once, for deploy and run time.

An action has a name, a frozen params struct (the one declaration of its
``with`` keys, their types, bounds and defaults; durations are seconds, written
in a manifest as ``"500ms"``, ``"2s"`` or a number) and where it runs:

- ``worker``: a task on ``natsflow.task.<action>``, carried out by a worker;
- ``engine``: carried out by the execution actor itself (``sleep`` is a
  durable timer).

The same check serves both ends. At deploy, ``ActionSpec.check(..., templates=True)``
reports every problem by path, and a whole template (``"${{ ... }}"``) stands
for any value; at run time ``ActionSpec.convert`` checks the rendered ``with``
and returns the struct, or raises ``ParamsError`` naming each field and value.
Rules across fields (``http``: ``json`` or ``body``) are the struct's
``cross_check``, applied at both ends too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from natsflow.events.errors import NatsflowError
from natsflow.manifests.schema import PositiveSeconds, Seconds, WorkflowName
from natsflow.manifests.structure import Problems, check_struct, show

__all__ = [
    "ACTIONS",
    "HTTP",
    "HTTP_METHODS",
    "NATS_REQUEST",
    "NOOP",
    "PYTHON",
    "SHELL",
    "SLEEP",
    "WAIT",
    "WORKFLOW",
    "ActionSpec",
    "HttpParams",
    "NatsRequestParams",
    "Params",
    "ParamsError",
    "PythonParams",
    "ShellParams",
    "SleepParams",
    "WaitParams",
    "WorkflowParams",
    "fields_of",
    "runs_in_engine",
    "worker_actions",
]

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")

NonEmptyStr = Annotated[str, Meta(min_length=1)]
# A YAML scalar meant as text (``PORT: 8080``) must be quoted to stay a string.
Text = Annotated[str, Meta(description="quote it")]


SignalName = Annotated[str, Meta(min_length=1, max_length=256)]
# A waited subject: tokens without white space, not under natsflow's own prefix. Checked
# in ``cross_check`` (not as a pattern): at deploy it may hold templates, rendered later.
_SUBJECT = re.compile(r"^(?!natsflow\.)[^.\s]+(\.[^.\s]+)*$")


class ParamsError(NatsflowError, ValueError):
    """An action's ``with`` does not fit its params struct; ``problems`` are ``path: reason``."""

    def __init__(self, action: str, problems: list[str]) -> None:
        super().__init__(f"{action}: " + "; ".join(problems))
        self.action = action
        self.problems = problems


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """Base of an action's parameters.

    A key the action does not know is an error at deploy (``check`` reports it by
    path) but is ignored at run time: tasks are messages, and during a rolling
    upgrade an older worker must carry out a task rendered by newer code.
    """

    @classmethod
    def cross_check(cls, given: Mapping[str, Any]) -> list[str]:
        """Rules across fields, over the keys given (a value may still be a template)."""
        return []


class ShellParams(Params, frozen=True):
    """``shell``: run ``argv`` without a shell; ``env`` is merged over the worker's."""

    argv: Annotated[
        tuple[Text, ...],
        Meta(min_length=1, description='arguments, never a shell string: e.g. ["echo", "hi"]'),
    ]
    env: dict[str, Text] = {}
    cwd: NonEmptyStr | None = None
    stdin: str | None = None


class HttpParams(Params, frozen=True):
    """``http``: one request; ``method`` in any case, upper-cased here."""

    url: NonEmptyStr
    method: (
        Annotated[
            str,
            Meta(
                pattern=f"^(?i:{'|'.join(HTTP_METHODS)})$",
                description=f"one of {', '.join(HTTP_METHODS)}, in any case",
            ),
        ]
        | None
    ) = None
    headers: dict[str, Text] = {}
    # UNSET, not None: ``json: null`` is a request body of its own.
    json: Any | UnsetType = UNSET
    body: str | None = None
    expect_status: tuple[Annotated[int, Meta(ge=100, le=599)], ...] | None = None
    timeout: PositiveSeconds = 300.0

    def __post_init__(self) -> None:
        if self.method is not None:
            msgspec.structs.force_setattr(self, "method", self.method.upper())

    @classmethod
    def cross_check(cls, given: Mapping[str, Any]) -> list[str]:
        return ["use json or body, not both"] if "json" in given and "body" in given else []


class NatsRequestParams(Params, frozen=True):
    """``nats.request``: a request on ``subject``; ``data`` absent sends an empty payload."""

    subject: NonEmptyStr
    data: Any | UnsetType = UNSET
    headers: dict[str, Text] = {}
    timeout: PositiveSeconds = 30.0


class PythonParams(Params, frozen=True):
    """``python``: call the registered ``function`` as ``fn(ctx, args)``."""

    function: NonEmptyStr
    args: dict[str, Any] = {}


class SleepParams(Params, frozen=True):
    """``sleep``: a durable timer of ``duration`` seconds."""

    duration: Seconds


class WaitParams(Params, frozen=True):
    """``wait``: until signal ``signal`` arrives or a message is published on ``subject``
    (exactly one); the step's ``timeout`` bounds it, then ``on_timeout`` decides: ``fail``
    (kind ``timeout``) or ``continue`` with ``default`` as the output."""

    signal: SignalName | None = None
    subject: NonEmptyStr | None = None
    on_timeout: Literal["fail", "continue"] = "fail"
    default: Any = None

    @classmethod
    def cross_check(cls, given: Mapping[str, Any]) -> list[str]:
        named = [key for key in ("signal", "subject") if given.get(key) is not None]
        if len(named) != 1:
            return ["name exactly one of signal or subject"]
        subject = given.get("subject")
        if isinstance(subject, str) and "${{" not in subject and not _SUBJECT.match(subject):
            return [
                f"subject: {show(subject)} is not a subject to wait on (dot-separated tokens"
                " without white space, not under natsflow.)"
            ]
        return []


class WorkflowParams(Params, frozen=True):
    """``workflow``: run a child execution of ``workflow`` (its latest version when the
    step starts) with ``input``; the step's output is the child's."""

    workflow: WorkflowName
    input: Any = None


P = TypeVar("P", bound=Params)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSpec(Generic[P]):
    """One action of the catalogue."""

    name: str
    runs: Literal["worker", "engine"]
    params: type[P] | None
    """The ``with`` struct; ``None``: any mapping, passed on as it is (``noop``)."""

    def check(
        self, with_: Mapping[Any, Any], path: str, problems: Problems, *, templates: bool = False
    ) -> dict[Any, Any]:
        """Check ``with_``, appending ``path.key: reason`` problems; return it normalized.

        With ``templates`` (deploy time) a whole template stands for any value.
        """
        if self.params is None:
            return dict(with_)
        out = check_struct(self.params, dict(with_), path, problems, templates=templates)
        problems.extend(f"{path}: {reason}" for reason in self.params.cross_check(with_))
        return out

    def convert(self, with_: Any) -> P:
        """The rendered ``with_`` as the params struct, or ``ParamsError`` naming each problem."""
        if self.params is None:
            raise TypeError(f"action {self.name!r} takes any mapping: nothing to convert")
        if not isinstance(with_, Mapping):
            raise ParamsError(self.name, [f"with: expected a mapping, got {show(with_)}"])
        if not self.params.cross_check(with_):
            # The struct's own decoder first: it is fast, and accepts exactly what the
            # check below accepts, but for durations written as strings.
            try:
                return msgspec.convert(with_, self.params)
            except msgspec.ValidationError:
                pass
        problems: Problems = []
        known = {f.encode_name for f in msgspec.structs.fields(self.params)}
        given = {k: v for k, v in with_.items() if k in known}  # newer keys: ignored here
        out = self.check(given, "with", problems)  # every problem, cross-field ones too
        if not problems:
            try:
                return msgspec.convert(out, self.params)
            except msgspec.ValidationError as e:  # pragma: no cover - check covers the types
                problems.append(f"with: {e}")
        raise ParamsError(self.name, problems)


NOOP: ActionSpec[Params] = ActionSpec(name="noop", runs="worker", params=None)
SHELL = ActionSpec(name="shell", runs="worker", params=ShellParams)
HTTP = ActionSpec(name="http", runs="worker", params=HttpParams)
NATS_REQUEST = ActionSpec(name="nats.request", runs="worker", params=NatsRequestParams)
PYTHON = ActionSpec(name="python", runs="worker", params=PythonParams)
SLEEP = ActionSpec(name="sleep", runs="engine", params=SleepParams)
WAIT = ActionSpec(name="wait", runs="engine", params=WaitParams)
WORKFLOW = ActionSpec(name="workflow", runs="engine", params=WorkflowParams)

#: Every built-in action by name, in the order the docs list them.
ACTIONS: Mapping[str, ActionSpec[Any]] = MappingProxyType(
    {a.name: a for a in (NOOP, SHELL, HTTP, NATS_REQUEST, PYTHON, SLEEP, WAIT, WORKFLOW)}
)


def worker_actions() -> tuple[str, ...]:
    """The names of the actions a worker carries out (each has a task subject)."""
    return tuple(name for name, action in ACTIONS.items() if action.runs == "worker")


def runs_in_engine(name: str) -> bool:
    """Whether the execution actor carries out ``name`` itself (no task, no worker)."""
    action = ACTIONS.get(name)
    return action is not None and action.runs == "engine"


def fields_of(action: ActionSpec[Any]) -> tuple[str, ...]:
    """The ``with`` keys of ``action`` (empty for one that takes any mapping)."""
    if action.params is None:
        return ()
    return tuple(f.encode_name for f in msgspec.structs.fields(action.params))
