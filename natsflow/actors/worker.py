"""Worker actors: run step attempts pulled from ``natsflow.task.<action>``.

A pool pulls from one durable consumer with at most ``concurrency`` tasks in
hand, so a slow step holds back no more than its own slot. While an attempt
runs, the pool tells the server it is in progress, so a long step is not
redelivered; if the process dies, another instance takes the task after
``ack_wait`` (or a restarted one at once, see ``deliveries.release``).
The attempt's result is published (and its ack awaited) before the task is
acked: a crash in between runs the attempt again, never loses it. ``drain``
stops taking tasks, lets the running ones finish within a grace period, then
stops the rest and hands their tasks back for another instance to run at once.

A cancelled execution's notice (core NATS, ``natsflow.cancel.<execution>``)
stops its attempts running here: the action's scope is cancelled (a ``shell``
step's process group gets SIGTERM, then SIGKILL after ``cancel_grace``; a
``python`` coroutine is cancelled, a thread abandoned; ``http`` and
``nats.request`` are abandoned), no result is sent and the task is acked. A
task of that execution not started yet is not started.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from natsflow.actors.actions import ActionContext, ActionRegistry
from natsflow.actors.deadletter import dead_letter
from natsflow.actors.jetstream.deliveries import Held
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.puller import Puller, ack, delivery
from natsflow.actors.jetstream.store import EventStore
from natsflow.actors.jetstream.topology import CANCEL_SUBJECTS, TASKS_STREAM, WORKERS_CONSUMER
from natsflow.actors.mailbox import Mailbox
from natsflow.actors.metrics import Metrics
from natsflow.actors.recently import RecentlyDone, RecentResults
from natsflow.events.commands import DispatchTask
from natsflow.events.errors import NatsflowError, StepError
from natsflow.events.messages import (
    ErrorInfo,
    Progress,
    Result,
    Task,
    cancel_notice_decoder,
    json_encoder,
    task_decoder,
)
from natsflow.events.model import awaits_result

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
REMEMBERED_ATTEMPTS = 50_000
REMEMBERED_BYTES = 64 << 20
REMEMBERED_CANCELS = 10_000


class WorkerPool:
    """``concurrency`` worker actors sharing one pull consumer."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        registry: ActionRegistry,
        metrics: Metrics,
        *,
        concurrency: int,
        ack_wait: float,
        publisher: Publisher | None = None,
        store: EventStore | None = None,
        cancel_grace: float = 5.0,
        consumer: str = WORKERS_CONSUMER,
    ) -> None:
        self._consumer = consumer  # a code app's step pool uses its app's own
        self._nc = nc
        # a cancelled shell step's process group: SIGTERM, then SIGKILL this much later
        self._cancel_grace = cancel_grace
        # attempts running now, by execution: what a cancel notice stops
        self._running: dict[str, dict[str, anyio.CancelScope]] = {}
        # executions cancelled lately: a task of theirs still waiting is not started
        self._cancelled = RecentlyDone(REMEMBERED_CANCELS)
        # reads the execution before running a task delivered again (not per step)
        self._store = store
        self._js = js
        self._registry = registry
        self._metrics = metrics
        self._concurrency = concurrency
        self._ack_wait = ack_wait
        self._publisher = publisher or Publisher(nc)
        # every task taken and not yet settled: kept alive, handed back on drain
        self._held = Held(nc, ack_wait)
        # attempts whose result this process stored (a returning task is not run again)
        self._done = RecentResults(REMEMBERED_ATTEMPTS, REMEMBERED_BYTES)
        self._mailbox: Mailbox[Msg] = Mailbox(concurrency)
        self._puller: Puller | None = None
        self._slots: anyio.CancelScope | None = None
        self._handed_back = anyio.Event()
        self._draining = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # Slots take tasks from one mailbox; the puller blocks while it is full, so at
        # most about 2 x `concurrency` tasks are pulled ahead, and the in-progress loop
        # covers those waiting in the mailbox as well as those running.
        cancels = await self._nc.subscribe(CANCEL_SUBJECTS, cb=self._on_cancel)
        try:
            await self._serve(task_status)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await cancels.unsubscribe()

    async def _serve(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._held.keep_alive, name="worker in-progress acks")
            with anyio.CancelScope() as self._slots:
                async with anyio.create_task_group() as slots:
                    for index in range(self._concurrency):
                        slots.start_soon(self._slot, name=f"worker slot {index}")
                    self._puller = Puller(
                        self._nc,
                        TASKS_STREAM,
                        self._consumer,
                        self._hand_over,
                        batch=self._concurrency,
                        # running plus waiting in the mailbox: never more in hand, so a
                        # task never waits unheld (and not kept alive) behind a full mailbox
                        credit=lambda: 2 * self._concurrency - len(self._held),
                    )
                    await slots.start(self._puller.run)
                    task_status.started()
            # Cancelled by drain: what the slots still held goes back to the stream.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._held.hand_back()
            self._handed_back.set()
            tg.cancel_scope.cancel()

    @property
    def held(self) -> Held:
        """The tasks this pool holds (taken, not settled)."""
        return self._held

    async def drain(self, grace: float) -> None:
        """Take no more tasks, give running attempts ``grace`` seconds, stop the rest
        (a shell step's process gets SIGTERM, then SIGKILL) and hand every task that
        did not finish back to the stream, to run again at once elsewhere."""
        self._draining = True
        await self._hand_back_waiting()
        if self._puller is not None:
            await self._puller.stop()
        await self._hand_back_waiting()
        with anyio.move_on_after(grace):
            await self._held.wait_empty()  # only the running attempts are held now
        if len(self._held):  # only running attempts are held by now
            log.warning(
                "drain: stopping %d step(s) still running after %ss", len(self._held), grace
            )
        if self._slots is not None:
            self._slots.cancel()
            with anyio.move_on_after(10):  # stopped steps are reaped, then handed back
                await self._handed_back.wait()

    async def _hand_back_waiting(self) -> None:
        while True:
            try:
                msg = self._mailbox.receive_nowait()
            except anyio.WouldBlock:
                return
            await self._held.hand_back(msg)

    async def _hand_over(self, msg: Msg) -> None:
        self._held.hold(msg)
        if self._draining:
            await self._held.hand_back(msg)
            return
        await self._mailbox.send(msg)

    async def _slot(self) -> None:
        # One cancel scope serves the slot's attempts until a cancel notice uses it (a
        # scope per attempt cost every task a scope's bookkeeping, for the rare cancel).
        # A stopped attempt unwinds to it at once (nothing between awaits); its task is
        # then settled outside it, and the slot goes on in a new scope. A scope of the
        # pool's (a drain) is not caught here: it stops the slot as before.
        while True:
            in_hand: list[Msg] = []
            with anyio.CancelScope() as scope:
                while True:
                    msg = await self._mailbox.receive()
                    in_hand.append(msg)
                    await self._take(msg, scope)
                    in_hand.clear()
            if not in_hand:  # pragma: no cover - the scope is only used while a task runs
                continue
            msg = in_hand[0]
            log.info("task on %s: stopped, its execution was cancelled", msg.subject)
            try:
                await ack(self._nc, msg)  # nobody waits for a result any more
            except Exception:  # NATS away: the slot goes on, as for any task
                log.exception("task on %s: not acked; it will be redelivered", msg.subject)
            finally:
                self._held.settle(msg)
            if self._puller is not None:
                await self._puller.refill()

    async def _take(self, msg: Msg, scope: anyio.CancelScope) -> None:
        """Run one task; ``scope`` is what a cancel notice for its execution cancels."""
        if self._draining:
            await self._held.hand_back(msg)
            return
        self._metrics.worker_tasks_in_flight.inc()
        try:
            await self._run_task(msg, scope)
        except Exception:
            log.exception("task on %s failed in the runtime; it will be redelivered", msg.subject)
            self._held.settle(msg)
        else:
            self._held.settle(msg)
        finally:
            self._metrics.worker_tasks_in_flight.dec()
        if self._puller is not None:
            await self._puller.refill()

    async def _run_task(self, msg: Msg, scope: anyio.CancelScope) -> None:
        try:
            task = task_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            error = f"invalid task message on {msg.subject}: {exc}"
            await dead_letter(self._nc, self._publisher, self._metrics, msg, "task", error)
            return
        key = task.idempotency_key
        stored = self._done.get(key)
        if stored is not None:
            # This process ran it already; the result's ack or the task's was lost (a
            # restart of nats-server): publish that result again (deduplicated by the
            # server if it still has it), and do not run the step a second time.
            reply_to, body = stored
            await self._publisher.publish(reply_to, body, {"Nats-Msg-Id": f"result:{key}"})
            await ack(self._nc, msg)
            return
        delivered, _ = delivery(msg)
        if delivered > 1 and not await self._still_awaited(task):
            # Its result was recorded and only the task's ack was lost (the worker died
            # in between): running the step again would repeat a finished step.
            log.info("task %s came back after its result was recorded: not run again", key)
            await ack(self._nc, msg)
            return
        if task.execution_id in self._cancelled:
            log.info("task %s: its execution was cancelled; not run", key)
            await ack(self._nc, msg)
            return
        running = self._running.get(task.execution_id)
        if running is None:
            running = self._running[task.execution_id] = {}
        running[key] = scope  # a cancel notice now stops it (see _slot)
        try:
            result = await self._attempt(task)
        finally:
            running.pop(key, None)
            if not running:
                self._running.pop(task.execution_id, None)
        if scope.cancel_called:  # a stop the action swallowed: taken here, nothing sent
            await anyio.lowlevel.checkpoint()
        try:
            body = json_encoder.encode(result)
        except (TypeError, msgspec.EncodeError) as exc:
            result = _failed(task, f"output is not serializable: {exc}", "not_serializable", False)
            body = json_encoder.encode(result)
        # Kept before it is published: if NATS takes the result but the ack never comes
        # (a restart), the task comes back and this result is published again, not rerun.
        self._done.add(task.idempotency_key, task.reply_to, body)
        await self._publisher.publish(
            task.reply_to, body, {"Nats-Msg-Id": f"result:{task.idempotency_key}"}
        )
        await ack(self._nc, msg)

    async def _on_cancel(self, msg: Msg) -> None:
        """A cancel notice: stop this execution's attempts running here, start none."""
        try:
            notice = cancel_notice_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.warning("invalid cancel notice on %s: %s", msg.subject, exc)
            return
        self._cancelled.add(notice.execution_id)
        for key, scope in self._running.get(notice.execution_id, {}).items():
            log.info("task %s: cancelling (%s)", key, notice.reason or "execution cancelled")
            scope.cancel()

    async def _still_awaited(self, task: Task) -> bool:
        """Whether the execution still waits for this attempt; when in doubt, yes
        (steps are at-least-once)."""
        if self._store is None:
            return True
        try:
            loaded = await self._store.load(task.execution_id, partial=True)
        except NatsflowError as exc:
            log.info("task %s: execution not read (%s); running it", task.idempotency_key, exc)
            return True
        return awaits_result(loaded.state, task.step, task.attempt, task.iteration)

    async def _attempt(self, task: Task) -> Result:
        last_progress = 0.0

        async def report_progress(text: str) -> None:
            nonlocal last_progress
            now = time.monotonic()
            if now - last_progress < PROGRESS_INTERVAL:
                return
            last_progress = now
            progress = Progress(
                step=task.step, attempt=task.attempt, iteration=task.iteration, message=text[:500]
            )
            await self._nc.publish(task.reply_to, json_encoder.encode(progress))

        ctx = ActionContext(
            execution_id=task.execution_id,
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            report_progress=report_progress,
            nc=self._nc,
            kill_grace=self._cancel_grace,
        )
        started = time.perf_counter()
        try:
            result = await run_attempt(self._registry, task, ctx)
        finally:
            self._metrics.child(self._metrics.step_duration, task.action).observe(
                time.perf_counter() - started
            )
        return result


async def run_attempt(
    registry: ActionRegistry, task: Task | DispatchTask, ctx: ActionContext
) -> Result:
    """Run one attempt's action under its timeout; every failure becomes a Result."""
    try:
        action = registry.get(task.action)
        params: dict[str, Any] = task.input if isinstance(task.input, dict) else {}
        if task.timeout is None:
            output = await action(ctx, params)
        else:
            with anyio.fail_after(task.timeout):
                output = await action(ctx, params)
    except TimeoutError:
        return _failed(task, f"step {task.step} timed out after {task.timeout}s", "timeout", True)
    except StepError as exc:
        retry_after = getattr(exc, "retry_after", None)
        return _failed(task, exc.message, exc.kind, exc.retryable, retry_after)
    except Exception as exc:
        return _failed(task, f"{type(exc).__name__}: {exc}", type(exc).__name__, True)
    return Result(
        step=task.step, attempt=task.attempt, iteration=task.iteration, ok=True, output=output
    )


def _failed(
    task: Task | DispatchTask,
    message: str,
    kind: str,
    retryable: bool,
    retry_after: float | None = None,
) -> Result:
    error = ErrorInfo(message=message, kind=kind, retryable=retryable, retry_after=retry_after)
    return Result(
        step=task.step, attempt=task.attempt, iteration=task.iteration, ok=False, error=error
    )
