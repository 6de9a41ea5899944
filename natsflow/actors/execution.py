"""Execution actors: one per active execution, fed by one shared durable consumer.

Handling one inbox message is: receive -> decide (the workflow's ``Decider``,
pure: the events and the state after them) -> append the batch with a
compare-and-set -> carry out its commands (tasks, timers, the execution's
summary; pure ``commands_for``) with their acks awaited together -> ack the
message. Each batch records the inbox sequence of the message it answers. A
crash anywhere before the ack redelivers the message (after a kill of
nats-server, even with a delivery count of 1 again); the actor then finds
nothing new to append and carries out that decision's commands again, those the
state still waits for (``resend_commands``), unless this process carried them
out already (``Executor.carried_out``); with the decision no longer in the tail
(compacted), a redelivered message re-sends everything pending
(``pending_commands``). Tasks and timers carry ``Nats-Msg-Id``, so the server
drops copies it still remembers. Commands that failed to go out (NATS away) are
owed, and carried out, as the state read again needs them, before the actor acks
any later message.

Workers answer on the execution's result subject (``natsflow.result.<partition>.<id>``,
read by the same consumer, so in one order with the inbox): anything there but a
``result`` or ``progress`` goes to the dead letters under ``result``. Results still
arriving on the inbox (tasks published before result subjects existed) are accepted.

A message that decides nothing is checked against the state read just now
(``misdirected``): for an execution that does not exist, a step it has not
scheduled or an attempt beyond its latest, it goes to the dead letters (a result
or progress under ``result``, anything else under ``inbox``) instead of being
acked and dropped; a late copy of a result no longer awaited is acked as usual.

An inbox message that does not decode is refused (``natsflow.events.refusals``): a
result that still names its step and attempt fails that attempt (kind
``invalid_result``, retried per policy), anything else is dead-lettered; a sender
that set ``Natsflow-Reply-To`` is told why there.

A history that cannot be read to its end (an event or snapshot that does not
decode: ``Undecodable``) parks the execution instead of redelivering its messages
forever: its summary says failed, naming the message; a copy of that message goes
to the dead letters, its timers are dropped, and the inbox message that found it,
like every later one while the actor is in memory, is dead-lettered without a read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from functools import partial

import anyio
import msgspec
from anyio.abc import TaskGroup
from msgspec.structs import replace
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from natsflow.actors.children import Children
from natsflow.actors.deadletter import dead_letter, dead_letter_stored
from natsflow.actors.deciders import DeciderSource
from natsflow.actors.effects import Effects
from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.deliveries import Held
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.puller import Puller, ack, delivery, nak
from natsflow.actors.jetstream.reads import read_summary
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import (
    ACTORS_CONSUMER,
    INBOX_STREAM,
    execution_from_subject,
    is_result_subject,
)
from natsflow.actors.mailbox import Mailbox
from natsflow.actors.metrics import Metrics
from natsflow.actors.recently import RecentlyDone
from natsflow.actors.starter import Starter
from natsflow.events.commands import (
    AnyCommand,
    CancelTimers,
    WriteSummary,
    commands_for,
    pending_commands,
    resend_commands,
)
from natsflow.events.errors import (
    ConcurrencyConflict,
    Misdirected,
    NatsflowError,
    NondeterminismError,
    NotFound,
    Undecodable,
)
from natsflow.events.feed import feed_messages
from natsflow.events.messages import (
    AnyInbox,
    Progress,
    Result,
    Start,
    inbox_decoder,
    misdirected,
)
from natsflow.events.model import INITIAL, AnyEvent, ExecutionState
from natsflow.events.refusals import Refusal, refusal_encoder, salvage_result
from natsflow.events.replies import reply_subject
from natsflow.events.views import parked_summary

log = logging.getLogger(__name__)

MAILBOX_SIZE = 64
MAX_CONFLICT_RETRIES = 5
POISON_DELIVERIES = 5
# How soon a message whose handling failed for a passing reason (NATS away) comes again.
RETRY_DELAY = 1.0
REMEMBERED_DECISIONS = 50_000
# A code execution parked by a NondeterminismError tries again this often (a fixed
# deploy then takes it on); its summary's error starts with PARKED_PREFIX meanwhile.
PARKED_RETRY = 30.0
PARKED_PREFIX = "parked: "


class _Passivate:
    """Mailbox sentinel: the executor asks an idle actor to stop (memory cap)."""


class ExecutionActor:
    """Owns one execution while it is active: its state, last sequence and mailbox."""

    def __init__(self, execution: str, system: Executor) -> None:
        self.execution = execution
        self._system = system
        self._mailbox: Mailbox[Msg | _Passivate] = Mailbox(MAILBOX_SIZE)
        self._state: ExecutionState | None = None
        self._last_seq = 0
        self._snapshot_seq = 0
        self._since_snapshot = 0
        # inbox sequence -> events of the last decisions read from the stream
        self._recent: dict[int, tuple[AnyEvent, ...]] = {}
        # the inbox sequence and events of an appended decision whose commands have not
        # all gone out yet (NATS went away meanwhile)
        self._owed: tuple[int, tuple[AnyEvent, ...]] | None = None
        # why the execution is parked (its history cannot be read), once it is
        self._parked: str | None = None
        self.last_active = time.monotonic()

    @property
    def mailbox(self) -> Mailbox[Msg | _Passivate]:
        return self._mailbox

    async def run(self) -> None:
        system = self._system
        try:
            while True:
                # No timeout scope per message: the executor's sweep sends _Passivate to
                # actors idle for idle_timeout (and to the oldest when over max_active).
                # A waiting message is taken without yielding to the loop (bigger writes).
                item = await self._mailbox.receive()
                if isinstance(item, _Passivate):
                    if await self._passivate():
                        return
                    continue
                self.last_active = time.monotonic()
                await self._handle(item)
                # Not on cancellation (a drain): a message in hand is then handed back.
                system.held.settle(item)
                self.last_active = time.monotonic()
        finally:
            system.forget(self)

    async def _passivate(self) -> bool:
        """Pay what it owes, snapshot (if anything is new), then leave; stays if messages
        arrived meanwhile, or while NATS still refuses what it owes."""
        if self._owed is not None:
            try:
                await self._pay_owed()
            except NatsflowError as exc:
                log.info("execution %s: stays to send what it owes: %s", self.execution, exc)
                self._state = None
                return False
        if self._state is not None and self._since_snapshot > 0 and self._system.snapshot_every:
            await self._snapshot()
        if len(self._mailbox):
            return False
        self._system.forget(self)  # before any further await: no message can be routed here now
        self._system.deciders.forget(self.execution)  # a kept coroutine too: bounded memory
        return True

    async def _handle(self, msg: Msg) -> None:
        try:
            await self._process(msg)
        except NatsflowError as exc:
            # NATS unavailable while acking, dead-lettering or snapshotting: the message
            # is redelivered (or the snapshot written later); the actor goes on.
            log.warning("execution %s: %s", self.execution, exc)
            self._state = None

    async def _process(self, msg: Msg) -> None:
        system = self._system
        if self._parked is not None:
            await system.dead_letter(msg, "inbox", f"parked: {self._parked}")
            return
        on_results = is_result_subject(msg.subject)
        try:
            message: AnyInbox = inbox_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            reason = "result" if on_results else "inbox"
            salvaged = await system.refuse(msg, self.execution, str(exc), reason)
            if salvaged is None:
                return
            message = salvaged  # the attempt it names fails: retried per policy, no hang
        if on_results and not isinstance(message, Result | Progress):
            # Whoever may answer tasks must not be able to steer executions with it.
            await system.dead_letter(msg, "result", self._not_a_result(message, msg.subject))
            return
        system.metrics.child(system.metrics.inbox_messages, type(message).__name__.lower()).inc()
        delivered, sequence = delivery(msg)
        try:
            await self._apply(message, cause=sequence, redelivered=delivered > 1)
        except NotFound as exc:
            await system.dead_letter(msg, "inbox", f"execution {self.execution}: {exc}")
            return
        except Misdirected as exc:
            await system.dead_letter(msg, exc.reason, str(exc))
            return
        except Undecodable as exc:
            await self._park(msg, exc)
            return
        except NondeterminismError as exc:
            await self._park_code(msg, exc)
            return
        except (NatsflowError, OSError, TimeoutError) as exc:
            # NATS unavailable, a conflict storm, a timeout: the message comes again in a
            # second (or after the ack wait, if NATS cannot even take the NAK).
            log.warning("execution %s: %s; the message will be redelivered", self.execution, exc)
            self._state = None  # re-read on the next message
            await nak(system.nc, msg, delay=RETRY_DELAY)
            return
        except Exception as exc:
            # A bug must not take down every other execution in this process; a message
            # that keeps failing goes to the dead letters instead of looping forever.
            self._state = None
            if delivered >= POISON_DELIVERIES:
                error = f"execution {self.execution}: {type(exc).__name__}: {exc}"
                await system.dead_letter(msg, "inbox", error)
            else:
                log.exception("execution %s: unexpected error; will retry", self.execution)
            return
        await ack(system.nc, msg)
        if system.snapshot_every and self._since_snapshot >= system.snapshot_every:
            await self._snapshot()

    async def _apply(self, message: AnyInbox, *, cause: int, redelivered: bool) -> None:
        """Decide on ``message`` (inbox sequence ``cause``), append, carry out the commands.

        A message that brings nothing new may be one handled before whose ack was lost
        (after a restart of nats-server its delivery count may even read 1 again), perhaps
        before its commands went out: if a recent decision answered it, that decision's
        commands are carried out again, those the state still waits for.
        """
        system = self._system
        fresh = self._state is None  # read (or created) just now, not cached from before
        if self._owed is not None:  # first: no later message is acked while these are owed
            fresh = await self._pay_owed() or fresh
        if self._state is None:
            if isinstance(message, Start) and not redelivered:
                # A new execution has no history to read: compare-and-set on 0 proves it.
                self._state = replace(INITIAL, execution_id=self.execution)
                self._last_seq = 0
            else:
                await self._activate()
        for _ in range(MAX_CONFLICT_RETRIES):
            state = self._state
            assert state is not None
            if isinstance(message, Start) and state.status == "pending":
                decider = await system.deciders.get(message.workflow, message.version)
            elif state.status == "pending":
                if not fresh:  # a state cached before another instance started it
                    await self._activate()
                    fresh = True
                    continue
                self._misdirected(state, message)  # nothing started here: a dead letter
                return
            else:
                decider = await system.deciders.get(state.workflow, state.version)
            decision = decider.react(state, message, time.time())
            events = decision.events
            if not events and not fresh:
                # A cached state may be stale (another instance appended since): a result
                # it does not expect must not be acked and dropped before a re-read.
                await self._activate()
                fresh = True
                continue
            if not events:
                self._misdirected(state, message)
                if (self.execution, cause) in system.carried_out:
                    return  # this process carried out its decision: the ack was what got lost
                answered = self._recent.get(cause) if cause else None
                if answered is not None:
                    await system.effects.carry_out(resend_commands(answered, state))
                elif redelivered:  # its decision may be compacted into the snapshot
                    await system.effects.carry_out(pending_commands(state))
                return
            try:
                started = time.perf_counter()
                seq = await system.store.append(self.execution, events, self._last_seq, cause)
                system.metrics.append_seconds.observe(time.perf_counter() - started)
            except ConcurrencyConflict:
                system.metrics.decision_conflicts.inc()
                await self._activate()
                continue
            system.metrics.decisions.inc()
            new_state = decision.state
            self._state, self._last_seq = new_state, seq
            self._since_snapshot += len(events)
            system.effects.count(state, new_state, events)
            await self._carry_out(cause, events, commands_for(state, new_state, events))
            await system.publish_feed(new_state.workflow, self.execution, seq, events)
            return
        raise NatsflowError(
            f"execution {self.execution}: {MAX_CONFLICT_RETRIES} conflicts in a row"
        )

    def _not_a_result(self, message: AnyInbox, subject: str) -> str:
        kind = message.__struct_config__.tag
        return (
            f"execution {self.execution}: a {kind!r} message on the result subject {subject},"
            " which carries only 'result' and 'progress' messages (control messages come"
            " through the admin API)"
        )

    def _misdirected(self, state: ExecutionState, message: AnyInbox) -> None:
        """Raise ``Misdirected`` if ``message`` cannot be for this execution (``state``
        read just now): a result or progress under the reason ``result``, else ``inbox``."""
        problem = misdirected(state, message)
        if problem is not None:
            reason = "result" if isinstance(message, Result | Progress) else "inbox"
            raise Misdirected(self.execution, problem, reason)

    async def _pay_owed(self) -> bool:
        """Carry out what an earlier decision still owes, as the state now needs it (another
        instance may have moved the execution on). True if the state was read for it."""
        assert self._owed is not None
        read = self._state is None
        if read:
            await self._activate()
        assert self._state is not None
        cause, events = self._owed
        await self._carry_out(cause, events, resend_commands(events, self._state))
        return read

    async def _carry_out(
        self, cause: int, events: tuple[AnyEvent, ...], commands: tuple[AnyCommand, ...]
    ) -> None:
        """Carry out a decision's commands; owed until they have all gone out (then, what
        they still mean for the state at that time is carried out: ``resend_commands``)."""
        self._owed = (cause, events)
        await self._system.effects.carry_out(commands)
        self._owed = None
        if cause:
            self._system.carried_out.add((self.execution, cause))

    async def _park(self, msg: Msg, problem: Undecodable) -> None:
        """Park the execution: its history cannot be read past ``problem``.

        Failed in its summary (``ls --status failed``), a copy of the message in the dead
        letters, its timers dropped; all once, whichever instance parks it first (a
        summary parked already with the same error means done). Then ``msg`` itself is
        dead-lettered. Should NATS fail meanwhile, ``msg`` comes again and parks anew.
        """
        system = self._system
        self._state, self._owed = None, None
        error = str(problem)
        try:
            previous = await read_summary(system.js, self.execution)
        except Undecodable:
            previous = None  # rewritten below
        summary = parked_summary(self.execution, error, previous, time.time())
        if summary != previous:
            await dead_letter_stored(system.publisher, system.metrics, problem)
            await system.effects.carry_out(
                (
                    WriteSummary(execution_id=self.execution, summary=summary),
                    CancelTimers(execution_id=self.execution),
                )
            )
        self._parked = error
        await system.dead_letter(msg, "inbox", f"parked: {error}")

    async def _park_code(self, msg: Msg, problem: NondeterminismError) -> None:
        """Park a code execution whose history this code does not replay: nothing is
        appended, the message goes back (and comes again every ``PARKED_RETRY`` seconds,
        with those after it) until code that matches runs here, when it goes on. Its
        summary keeps the status and says why (``show``, ``ls``), once."""
        system = self._system
        error = f"{PARKED_PREFIX}{problem}"
        self._state = None  # read again next time: the fixed code replays from the store
        system.metrics.child(system.metrics.inbox_messages, "parked").inc()
        previous = await read_summary(system.js, self.execution)
        if previous is not None and previous.error != error:
            log.error("execution %s parked: %s", self.execution, problem)
            summary = replace(previous, error=error)
            await system.effects.carry_out(
                (WriteSummary(execution_id=self.execution, summary=summary),)
            )
        await nak(system.nc, msg, delay=system.parked_retry)

    async def _activate(self) -> None:
        system = self._system
        started = time.perf_counter()
        loaded = await system.store.load(self.execution, use_snapshot=bool(system.snapshot_every))
        system.metrics.actor_activations.inc()
        system.metrics.actor_activation_seconds.observe(time.perf_counter() - started)
        self._state, self._last_seq = loaded.state, loaded.last_seq
        self._snapshot_seq, self._since_snapshot = loaded.snapshot_seq, loaded.events_read
        self._recent = loaded.recent

    async def _snapshot(self) -> None:
        assert self._state is not None
        try:
            self._snapshot_seq = await self._system.store.write_snapshot(
                self.execution,
                self._state,
                self._last_seq,
                self._snapshot_seq,
                archive=self._system.archive,
            )
            self._since_snapshot = 0
            self._system.metrics.snapshots_written.inc()
        except NatsflowError as exc:
            # A newer snapshot exists (another decider: theirs wins), or NATS is down
            # (a later snapshot covers these events): nothing is lost either way.
            log.info("execution %s: snapshot skipped: %s", self.execution, exc)
            self._state = None


class Executor:
    """Routes inbox messages to execution actors; activates and passivates them."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        deciders: DeciderSource,
        metrics: Metrics,
        *,
        idle_timeout: float = 30.0,
        max_active: int = 10_000,
        snapshot_every: int = 100,
        archive: bool = False,
        publisher: Publisher | None = None,
        ack_wait: float = 30.0,
        starter: Starter | None = None,
        feed: bool = True,
        consumer: str = ACTORS_CONSUMER,
    ) -> None:
        self.consumer = consumer  # a code app's processes use their app's own
        self.parked_retry = PARKED_RETRY
        self.nc = nc
        self.feed = feed
        self.js = js
        self.deciders = deciders
        self.metrics = metrics
        self.publisher = publisher or Publisher(nc)
        self.store = EventStore(nc, js, self.publisher)
        # Children (the ``workflow`` action) start through the one start use case.
        starter = starter or Starter(
            Definitions(js),
            self.publisher,
            IdempotencyKeys(js, self.publisher),
            partial(read_summary, js),
        )
        self.effects = Effects(
            self.publisher, js, metrics, nc, Children(starter, self.publisher, self._load)
        )
        self.idle_timeout = idle_timeout
        self.max_active = max_active
        self.snapshot_every = snapshot_every
        self.archive = archive
        # (execution, inbox sequence) of the decisions whose commands this process sent
        self.carried_out = RecentlyDone(REMEMBERED_DECISIONS)
        # inbox messages routed and not yet handled: kept alive, handed back on drain
        self.held = Held(nc, ack_wait)
        self._actors: OrderedDict[str, ExecutionActor] = OrderedDict()
        self._tg: TaskGroup | None = None
        self._puller: Puller | None = None
        self._scope: anyio.CancelScope | None = None
        self._handed_back = anyio.Event()
        self._draining = False

    @property
    def active(self) -> int:
        return len(self._actors)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.held.keep_alive, name="actor in-progress acks")
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self._puller = Puller(
                        self.nc, INBOX_STREAM, self.consumer, self._route, batch=512
                    )
                    await tg.start(self._puller.run)
                    tg.start_soon(self._sweep_idle, name="passivate idle actors")
                    task_status.started()
            # Stopped by drain: messages still in mailboxes go back to the stream.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self.held.hand_back()
            self._handed_back.set()
            outer.cancel_scope.cancel()

    async def drain(self, grace: float) -> None:
        """Take no more inbox messages; let the actors handle what they have (within
        ``grace`` seconds), then stop them and hand back what is left."""
        self._draining = True
        if self._puller is not None:
            await self._puller.stop()
        with anyio.move_on_after(grace):
            await self.held.wait_empty()
        if self._scope is not None:
            self._scope.cancel()
            with anyio.move_on_after(10):  # run() hands back what is left, then returns
                await self._handed_back.wait()

    async def _load(self, execution: str) -> ExecutionState:
        """An execution's state as stored (a child's, to report its end again)."""
        return (await self.store.load(execution, use_snapshot=bool(self.snapshot_every))).state

    async def _sweep_idle(self) -> None:
        """Ask actors idle for ``idle_timeout`` to passivate (snapshot and leave memory)."""
        while True:
            await anyio.sleep(max(0.05, self.idle_timeout / 4))
            idle_since = time.monotonic() - self.idle_timeout
            for actor in [a for a in self._actors.values() if a.last_active <= idle_since]:
                with contextlib.suppress(anyio.WouldBlock):  # busy: not idle after all
                    actor.mailbox.send_nowait(_Passivate())

    async def _route(self, msg: Msg) -> None:
        self.held.hold(msg)
        if self._draining:
            await self.held.hand_back(msg)
            return
        execution = execution_from_subject(msg.subject)
        actor = self._actors.get(execution)
        if actor is None:
            actor = ExecutionActor(execution, self)
            self._actors[execution] = actor
            self.metrics.active_actors.set(len(self._actors))
            assert self._tg is not None
            self._tg.start_soon(actor.run, name=f"execution {execution}")
            if len(self._actors) > self.max_active:
                oldest = next(iter(self._actors.values()))
                with contextlib.suppress(anyio.WouldBlock):  # busy: it is not idle anyway
                    oldest.mailbox.send_nowait(_Passivate())
        else:
            self._actors.move_to_end(execution)
        try:
            actor.mailbox.send_nowait(msg)
        except anyio.WouldBlock:  # a full mailbox: back-pressure on the puller
            await actor.mailbox.send(msg)

    def forget(self, actor: ExecutionActor) -> None:
        if self._actors.get(actor.execution) is actor:
            del self._actors[actor.execution]
            self.metrics.active_actors.set(len(self._actors))

    async def dead_letter(self, msg: Msg, reason: str, error: str) -> int:
        return await dead_letter(self.nc, self.publisher, self.metrics, msg, reason, error)

    async def publish_feed(
        self, workflow: str, execution: str, sequence: int, events: tuple[AnyEvent, ...]
    ) -> None:
        """Tell any listener the events just stored (``natsflow.events.feed``): core NATS,
        after the commands went out, so the feed never delays a step."""
        if not self.feed:
            return
        for subject, body in feed_messages(workflow, execution, sequence, events):
            await self.nc.publish(subject, body)

    async def refuse(
        self, msg: Msg, execution: str, problem: str, reason: str = "inbox"
    ) -> Result | None:
        """An inbox message that does not decode (``problem``): the failed attempt it
        stands for if it is a result that names one (``salvage_result``), else None once
        it is dead-lettered. Its sender hears why either way, if it named where."""
        salvaged = salvage_result(msg.data, problem)
        refusal = Refusal(execution_id=execution, error=problem, outcome="attempt_failed")
        if salvaged is not None:
            log.warning("execution %s: invalid result: %s", execution, problem)
            refusal = replace(refusal, step=salvaged.step, attempt=salvaged.attempt)
        else:
            letter = await self.dead_letter(msg, reason, f"execution {execution}: {problem}")
            refusal = replace(refusal, outcome="dead_lettered", dead_letter=letter)
        subject = reply_subject(dict(msg.headers or {}))
        if subject is not None:
            # Core NATS, not awaited: the worker listens now or not at all.
            await self.nc.publish(subject, refusal_encoder.encode(refusal))
        return salvaged
