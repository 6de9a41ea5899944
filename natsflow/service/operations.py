"""The operations behind the admin API: one handler, one ``match``, for every front end.

``Operations.handle`` carries out any ``AdminRequest``; the NATS micro service
(``service.admin``) and the HTTP sidecar (``service.http``) call it, and map
what it raises with ``service.outcomes.outcome``. Starting an execution is the
start use case's (``actors.starter.Starter``); the rest reads the event store,
the summaries and the definitions through the JetStream adapter.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, assert_never

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from natsflow.actors.index import ExecutionIndex
from natsflow.actors.jetstream.action_queues import (
    action_queue,
    app_steps_queue,
    custom_actions,
    ensure_action_consumers,
)
from natsflow.actors.jetstream.deadletters import DeadLetterStore
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.reads import archive_exists, read_summary
from natsflow.actors.jetstream.retention import expired_message, expired_summary
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import ARCHIVE_STREAM, inbox_subject
from natsflow.actors.starter import Starter
from natsflow.actors.triggers import (
    capture_triggers,
    deployed_triggers,
    overlapping_triggers,
    trigger_subjects,
)
from natsflow.code.ids import app_of
from natsflow.events.errors import (
    Conflict,
    InputError,
    ManifestError,
    NotFound,
    Unavailable,
    Undecodable,
)
from natsflow.events.listing import ExecutionFilter, decode_cursor, encode_cursor, parse_time
from natsflow.events.messages import (
    Cancel,
    Pause,
    Resume,
    Signal,
    Unpause,
    json_encoder,
    signal_msg_id,
)
from natsflow.events.model import AnyEvent, ExecutionState
from natsflow.events.plan import Plan, PlannedStep
from natsflow.events.queues import ActionQueue
from natsflow.events.views import (
    ExecutionSummary,
    ExecutionView,
    execution_view,
    parked_at,
    parked_state,
)
from natsflow.manifests.custom import is_custom_action
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.resuming import unknown_step
from natsflow.manifests.schema import Workflow
from natsflow.service.deadletters import DeadLetterOperations
from natsflow.service.protocol import (
    AdminRequest,
    CancelRequest,
    CancelRequested,
    Deployed,
    DeployRequest,
    DlqListRequest,
    DlqPurgeRequest,
    DlqRedriveRequest,
    DlqShowRequest,
    ExecutionPage,
    History,
    HistoryRequest,
    ListRequest,
    PauseChanged,
    PauseRequest,
    Reply,
    ResumeRequest,
    ResumeRequested,
    ShowRequest,
    Signalled,
    SignalRequest,
    SnapshotInfo,
    StartRequest,
    Stats,
    StatsRequest,
    StatsRow,
    TriggersRequest,
    UnpauseRequest,
    WorkflowsRequest,
    WorkflowVersion,
)
from natsflow.service.triggers import TriggerOperations


class Operations:
    """Deploy workflows; start, read and steer executions; list triggers; read and act on
    dead letters."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        definitions: Definitions,
        publisher: Publisher,
        starter: Starter,
        index: ExecutionIndex | None = None,
        *,
        task_ack_wait: float = 5.0,
    ) -> None:
        self._nc = nc
        # the ack wait of the consumers made for custom actions at deploy
        self._task_ack_wait = task_ack_wait
        self._js = js
        self._definitions = definitions
        self._publisher = publisher
        self._starter = starter
        self._store = EventStore(nc, js, publisher)
        self._dlq = DeadLetterOperations(DeadLetterStore(nc, js, publisher))
        self._triggers = TriggerOperations(nc, js, definitions)
        self._index = index

    async def handle(self, request: AdminRequest) -> Reply:
        """Carry out ``request``; raises what ``service.outcomes`` maps to a status code."""
        if not self._nc.is_connected:  # answer at once rather than after a timeout
            raise Unavailable("not connected to NATS (reconnecting): retry later")
        match request:
            case DeployRequest():
                return await self.deploy(request)
            case StartRequest(workflow=workflow, input=input, idempotency_key=key):
                return await self._starter.start(workflow, input, key)
            case ListRequest():
                return await self.ls(request)
            case ShowRequest(execution_id=execution_id):
                return await self.show(execution_id)
            case HistoryRequest():
                return await self.history(request)
            case CancelRequest():
                return await self.cancel(request)
            case SignalRequest():
                return await self.signal(request)
            case WorkflowsRequest():
                return await self.workflows()
            case TriggersRequest():
                return await self._triggers.ls()
            case DlqListRequest():
                return await self._dlq.ls(request)
            case DlqShowRequest(id=letter_id):
                return await self._dlq.show(letter_id)
            case DlqRedriveRequest():
                return await self._dlq.redrive(request)
            case DlqPurgeRequest():
                return await self._dlq.purge(request)
            case ResumeRequest():
                return await self.resume(request)
            case PauseRequest() | UnpauseRequest():
                return await self.pause(request)
            case StatsRequest():
                return await self.stats(request)
            case _:
                assert_never(request)

    async def deploy(self, request: DeployRequest) -> Deployed:
        workflow = parse_manifest(request.manifest, request.format, request.source)
        deployed = await deployed_triggers(self._definitions)
        if problems := overlapping_triggers(workflow, deployed):
            raise ManifestError(request.source, problems)
        # Each custom action's consumer exists before an execution can send it a task.
        await ensure_action_consumers(
            self._js, custom_actions(workflow), ack_wait=self._task_ack_wait
        )
        version, created = await self._definitions.deploy(workflow)
        # Its trigger subjects, new or gone, are captured exactly before the deploy answers.
        had = deployed.pop(workflow.name, None) is not None
        if subjects := trigger_subjects(workflow):
            deployed[workflow.name] = (subjects, workflow.enabled)
        if had or subjects:
            await capture_triggers(self._js, deployed)
        return Deployed(workflow=workflow.name, version=version, created=created)

    async def workflows(self) -> list[WorkflowVersion]:
        return [WorkflowVersion(**row) for row in await self._definitions.list()]

    def _execution_index(self) -> ExecutionIndex:
        if self._index is None:
            raise Unavailable("this process keeps no execution index: ask a natsflow serve")
        return self._index

    async def ls(self, request: ListRequest) -> ExecutionPage:
        """A page of executions from this instance's index (``show`` reads the history)."""
        index = self._execution_index()
        lag = await index.wait_caught_up()
        query = filter_of(request, time.time())
        if request.count:
            return ExecutionPage(executions=(), count=await index.count(query), lag=lag)
        rows, after = await index.select(query)
        cursor = encode_cursor(after) if after is not None else None
        return ExecutionPage(executions=tuple(rows), next=cursor, lag=lag)

    async def stats(self, request: StatsRequest) -> Stats:
        """Executions by workflow and status started in the window, from the index."""
        index = self._execution_index()
        lag = await index.wait_caught_up()
        query = filter_of(request, time.time())
        rows = tuple(
            StatsRow(workflow=w, status=s, count=n) for w, s, n in await index.stats(query)
        )
        total = sum(row.count for row in rows)
        return Stats(since=query.since, until=query.until, total=total, rows=rows, lag=lag)

    async def show(self, execution_id: str) -> ExecutionView:
        """The execution as its history tells it; one whose history cannot be read to the
        end is shown parked: failed, naming the message, with what precedes it."""
        loaded = await self._store.load(execution_id, partial=True)
        state, problem = loaded.state, loaded.problem
        parked = None
        if problem is not None:
            state = parked_state(state, str(problem), await self._summary(execution_id))
            parked = parked_at(problem)
        elif state.status == "pending":
            routed = await self._code_child(execution_id)
            if routed is not None:  # as its manifest parent printed it: the app's child
                return await self.show(routed)
            raise await self._missing(execution_id)
        plan: Plan = ()
        try:
            workflow = await self._definitions.get(state.workflow, state.version)
        except NotFound:  # its definition is gone: the steps it began are all there is
            total = sum(1 for step in state.steps.values() if step.parent is None)
        else:
            total, plan = len(workflow.steps), plan_of(workflow)
        if app_of(execution_id) is not None:  # a code workflow: only the calls it made
            total, plan = sum(1 for step in state.steps.values() if step.parent is None), ()
        queues = await self._queues(state)
        view = execution_view(state, loaded.last_seq, total, parked, plan, queues)
        if state.status == "running" and app_of(execution_id) is not None:
            view = await self._parked_code(view)
        return view

    async def _code_child(self, execution_id: str) -> str | None:
        """The routed id ``<app>==<id>`` of a code child that a manifest parent recorded as
        ``<parent>=<step>`` (its pure decider cannot know the child is code), else None:
        the parent is found by the id's prefixes, the workflow by the step's params."""
        if app_of(execution_id) is not None or "=" not in execution_id:
            return None
        parent = execution_id
        while "=" in parent:
            parent = parent.rsplit("=", 1)[0]
            state = (await self._store.load(parent, partial=True)).state
            if state.status == "pending":
                continue
            for step in state.steps.values():
                if step.child == execution_id and isinstance(step.input, dict):
                    workflow = step.input.get("workflow")
                    routed = await self._starter.routed_child(execution_id, workflow)
                    return routed if routed != execution_id else None
            return None
        return None

    async def _parked_code(self, view: ExecutionView) -> ExecutionView:
        """A code execution its app's code does not replay (``NondeterminismError``) is
        parked, running: its summary says why, and so does ``show``."""
        summary = await self._summary(view.execution_id)
        if summary is not None and summary.error and summary.error.startswith("parked: "):
            return msgspec.structs.replace(view, error=summary.error)
        return view

    async def _missing(self, execution_id: str) -> NotFound:
        """Not found: saying when it expired if retention removed it."""
        tombstone = await expired_summary(self._js, execution_id)
        if tombstone is not None:
            return NotFound(expired_message(execution_id, tombstone))
        return NotFound(f"execution {execution_id!r} not found")

    async def _queues(self, state: ExecutionState) -> dict[str, ActionQueue]:
        """The task queues of the custom actions ``state`` has scheduled steps of (read
        only then: ``show`` is polled); one that cannot be read now is left out."""
        if state.status != "running":
            return {}
        wanted = {
            step.action
            for step in state.steps.values()
            if step.status == "scheduled" and is_custom_action(step.action)
        }
        queues: dict[str, ActionQueue] = {}
        app = app_of(state.execution_id)
        for action in sorted(wanted):
            try:
                if app is not None and action.startswith(f"{app}."):  # the app's steps
                    queues[action] = await app_steps_queue(self._js, app, action)
                    continue
                queues[action] = await action_queue(self._js, action)
            except Unavailable:
                continue
        return queues

    async def _summary(self, execution_id: str) -> ExecutionSummary | None:
        """The execution's ``ls`` row; None if there is none, or it cannot be read either."""
        try:
            return await read_summary(self._js, execution_id)
        except Undecodable:
            return None

    async def history(self, request: HistoryRequest) -> History:
        execution_id, archive = request.execution_id, request.all
        if archive and not await archive_exists(self._js):
            raise InputError(
                "the archive is off: run the service with NATSFLOW_ARCHIVE=1 to keep the full"
                f" history in {ARCHIVE_STREAM} (from then on); without --all, history shows"
                " the latest snapshot and the events after it"
            )
        events = tuple(
            [
                history_entry(seq, event)
                async for seq, event in self._store.read_history(execution_id, archive=archive)
            ]
        )
        try:
            snapshot = None if archive else await self._store.snapshot_info(execution_id)
        except Undecodable as problem:
            return History(
                execution_id=execution_id,
                events=tuple(sorted((history_entry(problem.seq, problem), *events), key=_seq)),
                note=f"{problem}; the execution is read from its events if they are all still"
                " stored since its start, and is parked as failed otherwise",
            )
        if not events and snapshot is None:
            routed = await self._code_child(execution_id)
            if routed is not None:  # as its manifest parent printed it: the app's child
                return await self.history(msgspec.structs.replace(request, execution_id=routed))
            raise await self._missing(execution_id)
        if snapshot is None:
            return History(execution_id=execution_id, events=events)
        seq, state, covers = snapshot
        return History(
            execution_id=execution_id,
            events=events,
            snapshot=SnapshotInfo(seq=seq, covers=covers, events_before=state.events),
            note=f"history before stream sequence {covers} was compacted into a snapshot;"
            " run the service with NATSFLOW_ARCHIVE=1 and use --all for the full trail",
        )

    async def cancel(self, request: CancelRequest) -> CancelRequested:
        execution_id = request.execution_id
        status = (await self.show(execution_id)).status  # NotFound for an unknown id
        if status != "running":
            raise Conflict(
                f"execution {execution_id} is {status}: only a running one can be cancelled"
            )
        await self._publisher.publish(
            inbox_subject(execution_id), json_encoder.encode(Cancel(reason=request.reason))
        )
        return CancelRequested(execution_id=execution_id)

    async def signal(self, request: SignalRequest) -> Signalled:
        """Send signal ``name`` to a running execution's inbox, where it is kept until a
        ``wait`` for it takes it; refused (Conflict) once the execution has ended."""
        execution_id = request.execution_id
        status = (await self.show(execution_id)).status  # NotFound for an unknown id
        if status != "running":
            raise Conflict(
                f"execution {execution_id} is {status}: a signal can only reach a running one"
            )
        signal_id = request.id or secrets.token_hex(8)
        signal = Signal(name=request.name, data=request.data, id=signal_id)
        await self._publisher.publish(
            inbox_subject(execution_id),
            json_encoder.encode(signal),
            {"Nats-Msg-Id": signal_msg_id(execution_id, signal_id)},
        )
        return Signalled(execution_id=execution_id, signal=request.name, id=signal_id)

    async def resume(self, request: ResumeRequest) -> ResumeRequested:
        """Send ``resume`` to a failed execution; 409 for any other, 400 for an unknown step."""
        execution_id, from_step = request.execution_id, request.from_step
        view = await self.show(execution_id)  # NotFound for an unknown id
        if view.parked is not None:
            raise Conflict(
                f"execution {execution_id} is parked (its history cannot be read): it cannot"
                " be resumed"
            )
        if view.status != "failed":
            raise Conflict(
                f"execution {execution_id} is {view.status}: only a failed one can be resumed"
            )
        if from_step is not None and app_of(execution_id) is not None:
            # A code execution replays its calls in order (keys ``name#position``): the
            # manifest's "this step and its dependants" has no meaning there, and the
            # decider would ignore it while this answer claimed it.
            raise InputError(
                f"from_step: execution {execution_id} runs a code workflow, which resumes"
                " only from where it failed (resume it without from_step)"
            )
        if from_step is not None:
            workflow = await self._definitions.get(view.workflow, view.version)
            if problem := unknown_step(workflow, from_step):
                raise InputError(problem)
        await self._publisher.publish(
            inbox_subject(execution_id), json_encoder.encode(Resume(from_step=from_step))
        )
        return ResumeRequested(execution_id=execution_id, resume_at=from_step or view.resume_at)

    async def pause(self, request: PauseRequest | UnpauseRequest) -> PauseChanged:
        """Send ``pause`` / ``unpause`` to a running execution; 409 for one not running; a
        no-op answer (``changed`` False) when it is so already."""
        execution_id, pausing = request.execution_id, isinstance(request, PauseRequest)
        view = await self.show(execution_id)  # NotFound for an unknown id
        verb = "paused" if pausing else "unpaused"
        if view.status != "running":
            raise Conflict(
                f"execution {execution_id} is {view.status}: only a running one can be {verb}"
            )
        if view.paused == pausing:
            return PauseChanged(execution_id=execution_id, paused=pausing, changed=False)
        message = Pause() if pausing else Unpause()
        await self._publisher.publish(inbox_subject(execution_id), json_encoder.encode(message))
        return PauseChanged(execution_id=execution_id, paused=pausing)


def filter_of(request: ListRequest | StatsRequest, now: float) -> ExecutionFilter:
    """The index query a request asks, its times made absolute at ``now``."""
    since = parse_time("since", request.since).resolve(now) if request.since else None
    until = parse_time("until", request.until).resolve(now) if request.until else None
    if isinstance(request, StatsRequest):
        return ExecutionFilter(workflow=request.workflow, since=since, until=until)
    return ExecutionFilter(
        status=request.status,
        workflow=request.workflow,
        since=since,
        until=until,
        error=request.error,
        parent=request.parent,
        after=decode_cursor(request.after) if request.after else None,
        limit=request.limit,
    )


def history_entry(seq: int, event: AnyEvent | Undecodable) -> dict[str, Any]:
    """One line of ``history``: an event's fields, or, for a message that cannot be
    decoded, ``type: undecodable`` with where it is and why (its ``at`` is unknown)."""
    if isinstance(event, Undecodable):
        return {
            "seq": seq,
            "type": "undecodable",
            "at": None,
            "what": event.what,
            "stream": event.stream,
            "subject": event.subject,
            "reason": event.reason,
        }
    entry: dict[str, Any] = {"seq": seq, **msgspec.to_builtins(event)}
    return entry


def _seq(entry: dict[str, Any]) -> int:
    seq: int = entry["seq"]
    return seq


def plan_of(workflow: Workflow) -> Plan:
    """What ``show`` needs of a definition to list every step: names, actions, dependencies."""
    return tuple(
        PlannedStep(name=name, action=step.action, needs=step.needs, after=step.after)
        for name, step in workflow.steps.items()
    )
