"""The natsflow client: deploy workflows, start, read and steer executions from Python.

It speaks the admin API over NATS (``natsflow.api.<verb>``, see
``service.protocol``) and needs nothing but NATS access::

    async with await Client.connect("nats://127.0.0.1:4222") as natsflow:
        await natsflow.deploy_file("manifests/examples/hello.yaml")
        started = await natsflow.start("hello", {"name": "Ada"})
        view = await natsflow.wait(started.execution_id)

Replies are typed (``Started``, ``ExecutionView``, ...). An error reply raises
the natsflow error of its code: 400 ``InputError`` (``ManifestError`` listing a
manifest's problems, ``InvalidInput`` listing how a start's input breaks the
workflow's ``input`` schema), 404 ``NotFound``, 409 ``Conflict``, 503 ``Unavailable``,
500 ``InternalError``; no service answering, or NATS unreachable, is
``Unavailable`` too. The CLI, the HTTP tests' harness and the benchmarks all
use this client.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natsflow.events.deadletters import DeadLetters, DeadLetterView, Purged, Redriven
from natsflow.events.errors import Conflict, NotFound, Unavailable
from natsflow.events.feed import feed_subject
from natsflow.events.model import TERMINAL_EXECUTION
from natsflow.events.replies import REPLY_TO_HEADER, TriggerReply, reply_decoder
from natsflow.events.views import ExecutionSummary, ExecutionView, Started
from natsflow.manifests.loader import FORMATS, Format
from natsflow.service.outcomes import error_of
from natsflow.service.protocol import (
    DEFAULT_CANCEL_REASON,
    DEFAULT_LIST_LIMIT,
    AdminRequest,
    CancelRequest,
    CancelRequested,
    Deployed,
    DeployRequest,
    DlqListRequest,
    DlqPurgeRequest,
    DlqRedriveRequest,
    DlqShowRequest,
    ErrorReply,
    ExecutionPage,
    History,
    HistoryRequest,
    ListRequest,
    PauseChanged,
    PauseRequest,
    ResumeRequest,
    ResumeRequested,
    ShowRequest,
    Signalled,
    SignalRequest,
    StartRequest,
    Stats,
    StatsRequest,
    TriggerList,
    TriggersRequest,
    UnpauseRequest,
    WorkflowsRequest,
    WorkflowVersion,
    request_from,
    subject,
    verb_of,
)

DEFAULT_URL = "nats://127.0.0.1:4222"
T = TypeVar("T")

# The connection cannot carry the request (closed, draining, reconnecting, no server).
_NOT_CONNECTED: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
)
_WATCH_ERRORS: tuple[type[Exception], ...] = (nats.errors.TimeoutError, *_NOT_CONNECTED)
_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorReply)


class Client:
    """A client of the natsflow admin API over a nats-py connection.

    ``Client(nc)`` uses a connection the caller owns; ``await Client.connect(url)``
    opens one that ``close()`` (or leaving ``async with``) closes. ``request_timeout`` is
    how long each request waits for an answer.
    """

    def __init__(self, nc: NatsClient, *, request_timeout: float = 10.0) -> None:
        self.nc = nc
        self.request_timeout = request_timeout
        self._owns_connection = False

    @classmethod
    async def connect(
        cls,
        servers: str = DEFAULT_URL,
        *,
        request_timeout: float = 10.0,
        connect_within: float = 5.0,
        **options: Any,
    ) -> Client:
        """Connect to ``servers`` (comma-separated URLs); ``options`` go to ``nats.connect``.

        Raises ``Unavailable`` when NATS cannot be reached within ``connect_within`` s.
        """
        try:
            # nats-py may keep retrying a first connect: bound it.
            with anyio.fail_after(connect_within):
                nc = await nats.connect(servers=servers.split(","), **options)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            reason = str(exc) or f"no answer within {connect_within}s"
            raise Unavailable(f"cannot connect to NATS at {servers}: {reason}") from None
        client = cls(nc, request_timeout=request_timeout)
        client._owns_connection = True
        return client

    async def close(self) -> None:
        """Close the connection if ``connect`` opened it."""
        if self._owns_connection:
            await self.nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def deploy(
        self, manifest: str, format: Format = "yaml", source: str = "<api>"
    ) -> Deployed:
        """Validate ``manifest`` (text in ``format``) and make it the workflow's latest version."""
        request = DeployRequest(manifest=manifest, format=format, source=source)
        return await self.request(request, Deployed)

    async def deploy_file(self, path: str | Path) -> Deployed:
        """Deploy a manifest file; its format comes from its suffix (.yaml, .yml, .toml, .json)."""
        path = Path(path)
        if path.suffix not in FORMATS:
            raise ValueError(f"{path}: expected a .yaml, .yml, .toml or .json manifest")
        text = await anyio.Path(path).read_text()
        return await self.deploy(text, FORMATS[path.suffix], str(path))

    async def start(
        self, workflow: str, input: Any = None, *, idempotency_key: str | None = None
    ) -> Started:
        """Start an execution of the latest version (or find the one with this key)."""
        request = StartRequest(workflow=workflow, input=input, idempotency_key=idempotency_key)
        return await self.request(request, Started)

    async def trigger(
        self,
        subject: str,
        payload: Any = None,
        *,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
        within: float | None = None,
    ) -> TriggerReply:
        """Publish a trigger message (JSON ``payload``) and wait for the execution it starts.

        The message goes to JetStream like any trigger (stored before this returns
        past the publish), with a ``Natsflow-Reply-To`` header naming a fresh inbox;
        the reply says the execution id, or why the message was refused (``error``,
        with the ``dead_letter`` id). ``msg_id`` sets ``Nats-Msg-Id``: a copy the
        stream drops as a duplicate (within its 2-minute window) is not answered, so
        this raises ``Conflict`` for it. Raises ``NotFound`` when no stream captures
        ``subject`` (no deployed trigger names it) and ``Unavailable`` when no
        answer comes within ``within`` seconds (the request timeout by default).
        """
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, max_msgs=1)
        sent = {**(headers or {}), REPLY_TO_HEADER: inbox}
        if msg_id is not None:
            sent["Nats-Msg-Id"] = msg_id
        wait = self.request_timeout if within is None else within
        try:
            try:
                ack = await self.nc.jetstream().publish(
                    subject, _encoder.encode(payload), headers=sent, timeout=wait
                )
            except nats.js.errors.NoStreamResponseError:
                raise NotFound(f"no trigger captures {subject!r}: no stream stores it") from None
            except _WATCH_ERRORS as exc:
                raise Unavailable(f"cannot publish the trigger on {subject}: {exc!r}") from None
            if ack.duplicate:
                raise Conflict(
                    f"a message with Nats-Msg-Id {msg_id!r} was published within the stream's"
                    " duplicate window: it started its execution then, and this copy was dropped"
                )
            try:
                msg = await sub.next_msg(timeout=wait)
            except nats.errors.TimeoutError:
                raise Unavailable(
                    f"the trigger on {subject} was stored (stream sequence {ack.seq}) but no"
                    f" execution was reported within {wait}s: is a natsflow service running?"
                ) from None
        finally:
            await sub.unsubscribe()
        return reply_decoder.decode(msg.data)

    async def show(self, execution_id: str) -> ExecutionView:
        """An execution's status, steps and resume point."""
        return await self.request(ShowRequest(execution_id=execution_id), ExecutionView)

    async def history(self, execution_id: str, *, all: bool = False) -> History:
        """An execution's stored events (``all``: the full trail from the archive stream)."""
        return await self.request(HistoryRequest(execution_id=execution_id, all=all), History)

    async def ls(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        **filters: Any,
    ) -> list[ExecutionSummary]:
        """Executions, newest first, optionally filtered: the rows of one page
        (``ls_page`` for its cursor; ``filters``: since, until, error, parent, after)."""
        page = await self.ls_page(status=status, workflow=workflow, limit=limit, **filters)
        return list(page.executions)

    async def ls_page(self, **filters: Any) -> ExecutionPage:
        """One page of executions from the execution index, newest first: filters
        ``status``, ``workflow``, ``since``, ``until``, ``error``, ``parent``; ``limit``
        rows after the cursor ``after`` (the ``next`` of the page before); ``count=True``:
        how many match. ``InputError`` names a filter that is unknown or invalid."""
        return await self.request(request_from(ListRequest, filters), ExecutionPage)

    async def stats(
        self, *, workflow: str | None = None, since: str | None = None, until: str | None = None
    ) -> Stats:
        """Executions by workflow and status started within ``since`` .. ``until``."""
        fields = {"workflow": workflow, "since": since, "until": until}
        return await self.request(request_from(StatsRequest, fields), Stats)

    async def cancel(
        self, execution_id: str, reason: str = DEFAULT_CANCEL_REASON
    ) -> CancelRequested:
        """Ask a running execution to cancel (``Conflict`` if it is not running)."""
        request = CancelRequest(execution_id=execution_id, reason=reason)
        return await self.request(request, CancelRequested)

    async def resume(self, execution_id: str, from_step: str | None = None) -> ResumeRequested:
        """Resume a failed execution where it failed, or ``from_step`` and what depends on it
        (``Conflict`` if it is not failed, ``InputError`` for an unknown step)."""
        request = ResumeRequest(execution_id=execution_id, from_step=from_step)
        return await self.request(request, ResumeRequested)

    async def pause(self, execution_id: str) -> PauseChanged:
        """Pause a running execution: running steps finish, nothing new is dispatched
        (``Conflict`` if it is not running; ``changed`` False if it was paused already)."""
        return await self.request(PauseRequest(execution_id=execution_id), PauseChanged)

    async def unpause(self, execution_id: str) -> PauseChanged:
        """Let a paused execution go on (``changed`` False if it was not paused)."""
        return await self.request(UnpauseRequest(execution_id=execution_id), PauseChanged)

    async def signal(
        self, execution_id: str, name: str, data: Any = None, *, id: str | None = None
    ) -> Signalled:
        """Deliver signal ``name`` with ``data`` to a running execution (``id``: the same
        id sent again counts once)."""
        request = SignalRequest(execution_id=execution_id, name=name, data=data, id=id)
        return await self.request(request, Signalled)

    async def workflows(self) -> list[WorkflowVersion]:
        """Deployed workflows and the version new executions of each pin."""
        return await self.request(WorkflowsRequest(), list[WorkflowVersion])

    async def triggers(self) -> TriggerList:
        """Every deployed workflow's triggers: messages pending, next due time, last fire."""
        return await self.request(TriggersRequest(), TriggerList)

    async def dlq_ls(
        self, *, reason: str | None = None, after: int = 0, limit: int = DEFAULT_LIST_LIMIT
    ) -> DeadLetters:
        """Dead letters with ids above ``after``, oldest first (of ``reason``), and the total."""
        fields = {"reason": reason, "after": after, "limit": limit}
        return await self.request(request_from(DlqListRequest, fields), DeadLetters)

    async def dlq_show(self, letter_id: int) -> DeadLetterView:
        """One dead letter: why, where from, its headers and its payload."""
        return await self.request(request_from(DlqShowRequest, {"id": letter_id}), DeadLetterView)

    async def dlq_redrive(
        self,
        letter_id: int | None = None,
        *,
        all: bool = False,
        reason: str | None = None,
        input: Any = msgspec.UNSET,
    ) -> Redriven:
        """Send dead letter ``letter_id`` (with ``input`` as its payload, if given), or ``all``
        of them (of ``reason``), back to the subjects they came on; ``Conflict`` for one that
        cannot be redriven."""
        fields: dict[str, Any] = {"id": letter_id, "all": all, "reason": reason}
        if input is not msgspec.UNSET:
            fields["input"] = input
        return await self.request(request_from(DlqRedriveRequest, fields), Redriven)

    async def dlq_purge(
        self, letter_id: int | None = None, *, all: bool = False, reason: str | None = None
    ) -> Purged:
        """Delete dead letter ``letter_id``, those of ``reason``, or ``all`` of them."""
        fields = {"id": letter_id, "all": all, "reason": reason}
        return await self.request(request_from(DlqPurgeRequest, fields), Purged)

    async def wait(self, execution_id: str, *, within: float | None = None) -> ExecutionView:
        """Wait until the execution is completed, failed or cancelled; its final view.

        Watches the execution's summary (no polling). Raises ``TimeoutError``
        when it is still running after ``within`` seconds (None: no limit).
        """
        # The adapter is imported here, not at the top: `import natsflow` stays light.
        from natsflow.actors.jetstream.topology import EXECUTIONS_BUCKET

        try:
            kv = await self.nc.jetstream(timeout=self.request_timeout).key_value(EXECUTIONS_BUCKET)
            watcher = await kv.watch(execution_id)
        except _WATCH_ERRORS as exc:
            raise Unavailable(f"cannot watch execution {execution_id}: {exc!r}") from None
        try:
            with anyio.fail_after(within):
                while True:
                    try:
                        entry = await watcher.updates(timeout=3600)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue  # an hour without a change: still waiting, as asked
                    if (
                        entry is not None
                        and entry.value
                        and _status(entry.value) in (TERMINAL_EXECUTION)
                    ):
                        break
        except TimeoutError:
            raise TimeoutError(f"execution {execution_id} still running after {within}s") from None
        finally:
            with anyio.move_on_after(2, shield=True):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return await self.show(execution_id)

    async def watch(
        self, execution_id: str, *, refresh: float = 30.0
    ) -> AsyncGenerator[ExecutionView]:
        """The execution's view now, then each time it changes, until it is completed,
        failed or cancelled (the last view yielded). ``NotFound`` for an unknown id.

        The event feed (``natsflow.feed.*.<execution>.>``, core NATS: a viewer needs no
        JetStream consumer) nudges it: each nudge reads ``show`` once, however many
        events came meanwhile, and a view equal to the last one is not yielded again.
        Without a nudge for ``refresh`` s it reads ``show`` anyway, so a nudge lost (the
        feed is at most once: a reconnect, a slow consumer) delays a view, never ends the
        watch. Stop early with ``contextlib.aclosing`` to unsubscribe at once.
        """
        nudged = anyio.Event()

        async def nudge(_msg: Msg) -> None:
            nudged.set()

        async def subscribe(watched: str) -> Subscription:
            try:
                return await self.nc.subscribe(feed_subject("*", watched, ">"), cb=nudge)
            except nats.errors.Error as exc:  # not connected
                raise Unavailable(f"cannot watch execution {watched}: {exc!r}") from None

        # Subscribed before the first read: no event falls between the two (the feed
        # tells an event only once it is stored, so the read after a nudge sees it).
        sub = await subscribe(execution_id)
        try:
            last: ExecutionView | None = None
            while True:
                nudged = anyio.Event()  # a nudge from here on is for the next read
                view = await self.show(execution_id)
                if view.execution_id != execution_id:
                    # ``show`` resolved the id a manifest parent printed for its code child
                    # to the app's routed id: follow that one's feed, subscribed before
                    # the next read for the same reason as above.
                    execution_id = view.execution_id
                    printed, sub = sub, await subscribe(execution_id)
                    with anyio.move_on_after(2, shield=True), suppress(*_NOT_CONNECTED):
                        await printed.unsubscribe()
                    continue
                if view != last:
                    yield view
                    last = view
                if view.status in TERMINAL_EXECUTION:
                    return
                with anyio.move_on_after(refresh):
                    await nudged.wait()
        finally:
            with anyio.move_on_after(2, shield=True), suppress(*_NOT_CONNECTED):
                await sub.unsubscribe()

    async def request(self, request: AdminRequest, reply: type[T]) -> T:
        """Send any request; its reply decoded as ``reply`` (``object``: plain JSON values).

        Raises the natsflow error of an error reply's code.
        """
        verb = verb_of(type(request))
        try:
            msg = await self.nc.request(
                subject(verb), _encoder.encode(request), timeout=self.request_timeout
            )
        except nats.errors.NoRespondersError:
            raise Unavailable(
                "no natsflow service is running (start one with `make run`)"
            ) from None
        except nats.errors.TimeoutError:
            raise Unavailable(
                f"the natsflow service did not answer {verb} within {self.request_timeout}s"
            ) from None
        except _NOT_CONNECTED as exc:
            raise Unavailable(f"cannot send {verb}: not connected to NATS ({exc!r})") from None
        code = (msg.headers or {}).get("Nats-Service-Error-Code")
        if code:
            raise _error(msg.data, msg.headers or {}, code, request)
        return msgspec.json.decode(msg.data, type=reply)


def _error(data: bytes, headers: dict[str, str], code: str, request: AdminRequest) -> Exception:
    try:
        body = _error_decoder.decode(data)
    except msgspec.DecodeError:
        body = ErrorReply(error=headers.get("Nats-Service-Error") or f"error {code}")
    # A deploy's problems are its manifest's; any other request's, its input's.
    source = request.source if isinstance(request, DeployRequest) else None
    status = int(code) if code.isdigit() else 500
    return error_of(status, body.error, body.problems, source)


def _status(summary: bytes) -> str | None:
    try:
        return msgspec.json.decode(summary, type=_StatusOnly).status
    except msgspec.DecodeError:
        return None


class _StatusOnly(msgspec.Struct):
    status: str | None = None
