"""The admin protocol: every request and reply of ``natsflow.api.<verb>``, as msgspec structs.

A request is one member of the tagged union ``AdminRequest``; its tag (the
field ``verb``) is the verb, and the verb names the subject. Each endpoint
decodes its body as its own verb's struct (``decode_request``), so the tag may
be left out of a body. Requests forbid unknown fields and bound their values:
a typo or an out-of-range filter is refused with 400 naming the field, never
ignored. Replies are the read views of ``natsflow.events.views`` and the
structs below; they decode leniently (a newer service may add fields).

One handler (``natsflow.service.operations``) carries out any request with one
``match``; the NATS micro service and the HTTP sidecar both call it, and one
client (``natsflow.service.client``) sends them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta

from natsflow.events.deadletters import DeadLetters, DeadLetterView, Purged, Redriven
from natsflow.events.errors import InputError
from natsflow.events.listing import decode_cursor, parse_time
from natsflow.events.model import ExecutionStatus
from natsflow.events.views import ExecutionSummary, ExecutionView, Started
from natsflow.manifests.loader import Format
from natsflow.manifests.schema import NAME_PATTERN, WorkflowName

API_PREFIX = "natsflow.api"
"""The admin micro service's endpoints are ``natsflow.api.<verb>``."""

DEFAULT_LIST_LIMIT = 100
"""``ls`` returns at most this many executions unless ``limit`` says."""
MAX_LIST_LIMIT = 1000
"""The largest ``limit`` ``ls`` accepts."""

DEFAULT_CANCEL_REASON = "cancelled by operator"

ID_PATTERN = r"^[^.*>\s]+$"
REASON_PATTERN = r"^[A-Za-z0-9_-]+$"
ExecutionId = Annotated[str, Meta(min_length=1, max_length=256, pattern=ID_PATTERN)]
"""An execution id: a subject token (no ``.``, ``*``, ``>`` or white space)."""
SignalName = Annotated[str, Meta(min_length=1, max_length=256)]
Limit = Annotated[int, Meta(ge=1, le=MAX_LIST_LIMIT)]
StepName = Annotated[str, Meta(min_length=1, max_length=256)]


class _Request(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="verb"
):
    """Base of every admin request; the tag is the verb."""


class DeployRequest(_Request, frozen=True, tag="deploy"):
    """Validate a manifest and store it as the workflow's latest version."""

    manifest: str
    format: Format
    source: str = "<api>"


class StartRequest(_Request, frozen=True, tag="start"):
    """Start an execution of the workflow's latest version (or find it by idempotency key)."""

    workflow: WorkflowName
    input: Any = None
    idempotency_key: Annotated[str, Meta(min_length=1)] | None = None


TimeText = Annotated[str, Meta(min_length=1, max_length=64)]
"""``since`` / ``until``: a duration ago (``2h``, ``7d``), an RFC 3339 time or date, or Unix
seconds (``natsflow.events.listing.parse_time``)."""
ListedStatus = ExecutionStatus | Literal["expired"]


class _Window(_Request, frozen=True):
    """Filters shared by ``ls`` and ``stats``, checked when decoded (400 naming the field)."""

    workflow: WorkflowName | None = None
    since: TimeText | None = None
    until: TimeText | None = None

    def __post_init__(self) -> None:
        for field in ("since", "until"):
            text = getattr(self, field)
            if text is not None:
                parse_time(field, text)  # ValueError names the field


class ListRequest(_Window, frozen=True, tag="ls"):
    """Executions from the execution index, newest first, filtered; a page of ``limit``
    after the cursor ``after`` (the ``next`` of the page before); ``count``: how many
    match instead of the rows."""

    status: ListedStatus | None = None
    error: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    parent: ExecutionId | None = None
    limit: Limit = DEFAULT_LIST_LIMIT
    after: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    count: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.after is not None:
            decode_cursor(self.after)  # ValueError: "after: not a cursor ..."


class StatsRequest(_Window, frozen=True, tag="stats"):
    """Executions counted by workflow and status, started within ``since`` .. ``until``."""


class ShowRequest(_Request, frozen=True, tag="show"):
    """One execution's status, steps and resume point."""

    execution_id: ExecutionId


class HistoryRequest(_Request, frozen=True, tag="history"):
    """One execution's stored events (``all``: the full trail from the archive stream)."""

    execution_id: ExecutionId
    all: bool = False


class CancelRequest(_Request, frozen=True, tag="cancel"):
    """Ask a running execution to cancel."""

    execution_id: ExecutionId
    reason: str = DEFAULT_CANCEL_REASON


class SignalRequest(_Request, frozen=True, tag="signal"):
    """Deliver signal ``name`` with ``data`` to an execution."""

    execution_id: ExecutionId
    name: SignalName
    data: Any = None
    # the same id sent again (within two minutes, or while still kept) counts once
    id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class WorkflowsRequest(_Request, frozen=True, tag="workflows"):
    """Deployed workflows and their latest versions."""


class TriggersRequest(_Request, frozen=True, tag="triggers"):
    """Every deployed workflow's triggers: backlog, next due time, last fire."""


DlqReason = Annotated[str, Meta(min_length=1, max_length=64, pattern=REASON_PATTERN)]
"""A dead letter's reason: the last token of ``natsflow.dlq.<reason>``."""
LetterId = Annotated[int, Meta(ge=1)]
"""A dead letter's id: its sequence in the stream NATSFLOW_DLQ."""


class DlqListRequest(_Request, frozen=True, tag="dlq.ls"):
    """Dead letters with ids above ``after``, oldest first, optionally of one reason."""

    reason: DlqReason | None = None
    after: Annotated[int, Meta(ge=0)] = 0
    limit: Limit = DEFAULT_LIST_LIMIT


class DlqShowRequest(_Request, frozen=True, tag="dlq.show"):
    """One dead letter: its headers and payload."""

    id: LetterId


class DlqRedriveRequest(_Request, frozen=True, tag="dlq.redrive"):
    """Send dead letter ``id`` (with ``input`` as its payload, if given), or ``all`` of them
    (of ``reason``), back to the subjects they came on; each one sent is deleted."""

    id: LetterId | None = None
    all: bool = False
    reason: DlqReason | None = None
    input: Any | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if (self.id is None) == (not self.all):
            raise ValueError("give either an id or all=true")
        if self.input is not msgspec.UNSET and self.id is None:
            raise ValueError("input replaces one dead letter's payload: give its id")
        if self.reason is not None and not self.all:
            raise ValueError("reason selects among all dead letters: give all=true")


class DlqPurgeRequest(_Request, frozen=True, tag="dlq.purge"):
    """Delete dead letter ``id``, those of ``reason``, or ``all`` of them."""

    id: LetterId | None = None
    all: bool = False
    reason: DlqReason | None = None

    def __post_init__(self) -> None:
        if sum((self.id is not None, self.all, self.reason is not None)) != 1:
            raise ValueError("give one of an id, a reason or all=true")


class ResumeRequest(_Request, frozen=True, tag="resume"):
    """Resume a failed execution from where it failed (``from_step``: re-run that step and
    every step that depends on it, even completed)."""

    execution_id: ExecutionId
    from_step: StepName | None = None


class PauseRequest(_Request, frozen=True, tag="pause"):
    """Pause a running execution: running steps finish, nothing new is dispatched."""

    execution_id: ExecutionId


class UnpauseRequest(_Request, frozen=True, tag="unpause"):
    """Let a paused execution go on."""

    execution_id: ExecutionId


AdminRequest = (
    DeployRequest
    | StartRequest
    | ListRequest
    | ShowRequest
    | HistoryRequest
    | CancelRequest
    | SignalRequest
    | WorkflowsRequest
    | TriggersRequest
    | DlqListRequest
    | DlqShowRequest
    | DlqRedriveRequest
    | DlqPurgeRequest
    | ResumeRequest
    | PauseRequest
    | UnpauseRequest
    | StatsRequest
)


class WorkflowVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A deployed workflow and the version new executions of it pin."""

    workflow: str
    version: str


class TriggerRow(msgspec.Struct, frozen=True, kw_only=True):
    """One trigger of a workflow's latest version (``index``: its place in ``triggers``).

    ``kind`` is ``subject`` (``subject`` names it), ``cron`` (``schedule`` is the
    expression, in ``timezone``) or ``every`` (``schedule`` is the interval, e.g. ``30s``).
    ``pending``: a subject trigger's messages waiting in NATSFLOW_TRIGGERS or in flight;
    None: not counted (``note`` says why). ``last_fired_at``: when natsflow last took a
    message of the workflow's subject triggers (its consumer's last delivery; unknown
    while disabled), or when a schedule last started an execution (``last_execution``,
    the id). ``next_due``: a
    schedule's next due time; None while it has none (disabled, or not set yet).
    Times are Unix seconds.
    """

    workflow: str
    version: str
    enabled: bool
    index: int
    kind: Literal["subject", "cron", "every"]
    subject: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    pending: int | None = None
    next_due: float | None = None
    last_fired_at: float | None = None
    last_execution: str | None = None
    note: str | None = None


class TriggerList(msgspec.Struct, frozen=True, kw_only=True):
    """``triggers``: one row per trigger, by workflow then index."""

    triggers: tuple[TriggerRow, ...]


class Deployed(msgspec.Struct, frozen=True, kw_only=True):
    """A deploy's answer; ``created`` is False when this content was deployed before."""

    workflow: str
    version: str
    created: bool


class SnapshotInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The snapshot at stream sequence ``seq``: it covers the events up to ``covers``."""

    seq: int
    covers: int
    events_before: int


class History(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An execution's stored events, each ``{"seq", "type", "at", ...}``; with a snapshot,
    the events it compacted are gone from the hot stream (``note`` says where to look)."""

    execution_id: str
    events: tuple[dict[str, Any], ...]
    snapshot: SnapshotInfo | None = None
    note: str | None = None


class CancelRequested(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    cancel_requested: bool = True


class Signalled(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    signal: str
    id: str = ""


class ResumeRequested(msgspec.Struct, frozen=True, kw_only=True):
    """``resume``'s answer: the execution goes on from ``resume_at`` (a step; None when
    no step failed, e.g. its output could not be rendered)."""

    execution_id: str
    resume_at: str | None = None
    resume_requested: bool = True


class PauseChanged(msgspec.Struct, frozen=True, kw_only=True):
    """``pause`` / ``unpause``'s answer: ``paused`` is what was asked; ``changed`` is False
    when the execution was so already (nothing was sent)."""

    execution_id: str
    paused: bool
    changed: bool = True


class ExecutionPage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``ls``: one page of executions, newest first; ``next`` is the cursor of the next
    page (``after``), None on the last. With ``count``: ``count`` alone. ``lag``: summary
    changes the answering instance's index had not applied yet (0: up to date)."""

    executions: tuple[ExecutionSummary, ...]
    next: str | None = None
    count: int | None = None
    lag: int = 0


class StatsRow(msgspec.Struct, frozen=True, kw_only=True):
    workflow: str
    status: str
    count: int


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """``stats``: executions by workflow and status started in the window (Unix seconds;
    None: unbounded), and the total."""

    since: float | None
    until: float | None
    total: int
    rows: tuple[StatsRow, ...]
    lag: int = 0


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """The body of an error reply over NATS (HTTP answers ``{"error"}`` alone)."""

    error: str
    problems: tuple[str, ...] = ()


Reply = (
    Deployed
    | Started
    | ExecutionPage
    | Stats
    | ExecutionView
    | History
    | CancelRequested
    | Signalled
    | list[WorkflowVersion]
    | TriggerList
    | DeadLetters
    | DeadLetterView
    | Redriven
    | Purged
    | ResumeRequested
    | PauseChanged
)

Handler = Callable[[AdminRequest], Awaitable[Reply]]
"""Carries out any request: ``natsflow.service.operations.Operations.handle``."""

R = TypeVar("R", bound=_Request)


def verb_of(request_type: type[_Request]) -> str:
    """The verb (tag) of a request type: ``verb_of(StartRequest) == "start"``."""
    return str(request_type.__struct_config__.tag)


def subject(verb: str) -> str:
    return f"{API_PREFIX}.{verb}"


REQUEST_TYPES: dict[str, type[AdminRequest]] = {verb_of(t): t for t in get_args(AdminRequest)}
"""Every verb and its request struct, derived from the union."""

_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    verb: msgspec.json.Decoder(t) for verb, t in REQUEST_TYPES.items()
}


def decode_request(verb: str, body: bytes) -> AdminRequest:
    """Decode the body sent to ``natsflow.api.<verb>``; an empty body is ``{}``.

    Raises ``InputError`` naming the field for anything invalid.
    """
    try:
        request: AdminRequest = _DECODERS[verb].decode(body or b"{}")
    except msgspec.ValidationError as exc:
        raise InputError(field_message(exc)) from None
    except msgspec.DecodeError as exc:
        raise InputError(f"invalid JSON body: {exc}") from None
    return request


def request_from(request_type: type[R], fields: dict[str, Any]) -> R:
    """Build and validate a request from already decoded fields (HTTP's path, query and body).

    Raises ``InputError`` naming the field for anything invalid.
    """
    try:
        return msgspec.convert(fields, request_type)
    except msgspec.ValidationError as exc:
        raise InputError(field_message(exc)) from None


_PATTERNS = {
    ID_PATTERN: "an execution id (no '.', '*', '>' or white space)",
    NAME_PATTERN: "a workflow name (a-z, 0-9, '_' and '-', at most 64)",
    REASON_PATTERN: "a dead-letter reason (A-Z, a-z, 0-9, '_' and '-')",
}
_REGEX = re.compile(r"^Expected `str` matching regex (?P<pattern>'.*')$")
_AT = re.compile(r"^(?P<reason>.*) - at `\$\.?(?P<path>.*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>.*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>.*)`$")


def field_message(exc: msgspec.ValidationError) -> str:
    """msgspec's message led by the field it is about: ``status: Invalid enum value 'weird'``,
    ``inptu: unknown field``, ``workflow: required field missing``."""
    text, path = str(exc), ""
    if match := _AT.match(text):
        text, path = match["reason"], match["path"]
    for pattern, reason in ((_UNKNOWN, "unknown field"), (_MISSING, "required field missing")):
        if match := pattern.match(text):
            field = f"{path}.{match['field']}" if path else match["field"]
            return f"{field}: {reason}"
    if (match := _REGEX.match(text)) and (hint := _hint(match["pattern"])):
        text = f"expected {hint}"
    return f"{path}: {text}" if path else text


def _hint(quoted: str) -> str | None:
    return next((hint for p, hint in _PATTERNS.items() if repr(p) == quoted), None)
