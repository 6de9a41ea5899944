"""The manifest schema: typed, frozen structs a validated manifest decodes into.

Durations in a manifest are written as ``"500ms"``, ``"2s"``, ``"5m"``, ``"1h"``
or a number of seconds; after validation every duration field holds seconds as
a float. Expressions are strings of the form ``"${{ ... }}"`` (see
``manifests.expressions``); they stay strings here and are evaluated by the
pure decision function when a step becomes ready.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

# Names that appear in subjects and KV keys: keep them to a safe alphabet.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
WorkflowName = Annotated[str, Meta(pattern=NAME_PATTERN)]
StepName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]
Seconds = Annotated[float, Meta(ge=0)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
JsonSchema = Annotated[dict[str, Any], Meta(description="a JSON Schema object")]


class _Spec(msgspec.Struct, frozen=True, kw_only=True):
    """Base for manifest parts.

    A typo in a manifest is an error, not ignored: ``manifests.validate``
    refuses unknown fields by path. The structs themselves decode leniently
    (no ``forbid_unknown_fields``) because they are also stored (``StoredDefinition``):
    an older natsflow must read a definition a newer one deployed.
    """


class RetryPolicy(_Spec, frozen=True):
    """How a failing step is retried: ``attempts`` counts the first try."""

    attempts: Annotated[int, Meta(ge=1, le=1000)] = 1
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: Seconds = 1.0
    max_delay: Seconds = 300.0
    multiplier: Annotated[float, Meta(ge=1)] = 2.0
    # Error kinds that may be retried; empty means every retryable error.
    on: tuple[str, ...] = ()


class ForEach(_Spec, frozen=True):
    """Fan a step out over a list: one child per item, bound to ``item``.

    ``key`` names each child (default: its index); ``needs`` is an expression
    evaluated per item giving the keys of items that must complete first (an
    item whose need failed or was skipped is skipped: blocked), and ``after``
    the keys of items that must only have finished, however they ended (ordering
    only), so a list of entities can be processed in dependency order.
    """

    items: str
    key: str | None = None
    needs: str | None = None
    after: str | None = None
    concurrency: Annotated[int, Meta(ge=1)] | None = None


class Repeat(_Spec, frozen=True):
    """Run a step again and again until ``until`` holds over its output.

    Inside the step, ``loop.output`` is the previous iteration's output and
    ``loop.iteration`` its number (0 for the first run).
    """

    until: str
    max_iterations: Annotated[int, Meta(ge=1)] | None = None
    sleep: Seconds = 0.0


class Step(_Spec, frozen=True):
    """One node of the workflow DAG."""

    # A name from the action catalogue (manifests.actions), whose params struct
    # checks ``with``, or a custom action (manifests.custom) served by a team's worker.
    action: str
    with_: dict[str, Any] = msgspec.field(default_factory=dict, name="with")
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    timeout: PositiveSeconds | None = None
    when: str | None = None
    for_each: ForEach | None = None
    repeat: Repeat | None = None
    on_failure: Literal["fail", "continue"] = "fail"
    description: str = ""
    # No progress report from the worker for this long fails the attempt (kind "heartbeat").
    heartbeat: PositiveSeconds | None = None


class Trigger(_Spec, frozen=True):
    """What starts executions: messages on a subject, or a schedule (``cron`` or ``every``).

    A schedule (``manifests.schedules``) starts one execution per due time, with
    ``input`` plus ``scheduled_at``; ``catchup`` says what a due time missed
    while no natsflow instance ran becomes (``skip``: nothing, ``once``: one
    execution for the gap), ``overlap`` whether a due time starts while the
    trigger's previous execution still runs (``allow``), starts nothing
    (``skip``) or waits for it to end (``queue``: at most one due time waits).
    """

    subject: str | None = None
    # schedules
    cron: str | None = None  # five fields (minute hour day month weekday), in `timezone`
    timezone: str | None = None  # an IANA name (zoneinfo); UTC when unset
    every: PositiveSeconds | None = None  # a fixed interval, aligned on the Unix epoch
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    catchup: Literal["skip", "once"] = "skip"
    overlap: Literal["allow", "skip", "queue"] = "allow"


class ActionContract(_Spec, frozen=True):
    """What a custom action takes and gives (``manifests.contracts``): JSON Schemas of its
    ``with`` (checked at deploy, templates aside, and before each dispatch) and of a
    worker's output (checked when a result comes back); none: anything goes."""

    input: JsonSchema | None = None
    output: JsonSchema | None = None
    description: str = ""


class Workflow(_Spec, frozen=True):
    """A validated workflow manifest."""

    name: WorkflowName
    steps: dict[str, Step]
    description: str = ""
    # A JSON Schema every start's input must satisfy (``manifests.inputs``); none: any input.
    input: JsonSchema | None = None
    output: Any = None
    triggers: tuple[Trigger, ...] = ()
    idempotency_key: str | None = None
    enabled: bool = True
    # A finished execution's events, snapshot and summary are removed this long after it
    # finished (``actors.retention``); none: kept until deleted by hand.
    retention: PositiveSeconds | None = None
    # Contracts of custom actions by name (``actions: {billing.charge: {input: ..}}``).
    actions: dict[str, ActionContract] = msgspec.field(default_factory=dict)
    # A code workflow (``natsflow.code``): the app whose process runs it, and a hash of its code.
    app: str | None = None
    code: str | None = None

    # Set by natsflow (a code app's deploy), never written in a manifest.
    NOT_IN_MANIFESTS: ClassVar[frozenset[str]] = frozenset({"app", "code"})


class StoredDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """A stored workflow version: the manifest plus its content hash (decoded leniently)."""

    name: str
    version: str
    workflow: Workflow
    deployed_at: float
