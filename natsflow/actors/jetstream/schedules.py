"""Schedule triggers as chained ADR-51 ``@at`` message schedules.

Each schedule trigger ``i`` of a workflow has at most one message on
``natsflow.cron.<workflow>.<i>`` (the server rolls a schedule subject up to its
last message): a ``Nats-Schedule: @at <due>`` whose body, a ``Fire``, names
the workflow version, the trigger and the due time. When it is due the server
publishes the body on ``natsflow.fire.<workflow>.<i>`` and removes the
schedule; whoever takes that fire sets the next one. The chain lives in the
server, so it survives restarts of natsflow and needs no polling loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from natsflow.actors.jetstream.errors import unavailable_as
from natsflow.actors.jetstream.topology import (
    SCHEDULES_STREAM,
    WORKFLOWS_BUCKET,
    bind_bucket,
    cron_subject,
    fire_subject,
)
from natsflow.manifests.schedules import rfc3339

__all__ = [
    "Fire",
    "current_fire",
    "decode_fire",
    "drop_schedules",
    "follow_deploys",
    "set_schedule",
]


class Fire(msgspec.Struct, frozen=True, kw_only=True):
    """What a schedule publishes when due (decoded leniently: it is persisted).

    ``previous`` is the execution the trigger started last (for ``overlap``)
    and ``started_at`` when (Unix seconds; ``natsflow triggers`` shows it),
    carried from one due time to the next. ``check_at`` is set while due time
    ``due`` waits for ``previous`` to end (``overlap: queue``): the schedule then
    comes back at ``check_at`` to look again, instead of at ``due``.
    """

    workflow: str
    version: str
    trigger: int
    due: float
    previous: str | None = None
    started_at: float | None = None
    check_at: float | None = None


_decoder = msgspec.json.Decoder(Fire)


def decode_fire(data: bytes) -> Fire:
    """Raises ``msgspec.DecodeError`` for a body that is not a ``Fire``."""
    return _decoder.decode(data)


async def set_schedule(js: JetStreamContext, fire: Fire, *, after_seq: int | None) -> bool:
    """Make ``fire`` the trigger's next due time; returns whether it was set.

    With ``after_seq`` set, only if the trigger's schedule is still the message with
    that stream sequence (0: none is set): a compare-and-set, so that of two
    instances chaining or reconciling the same trigger only one writes. Without
    it the schedule is replaced whatever it was (a deploy's new version).
    """
    headers = {
        "Nats-Schedule": f"@at {rfc3339(fire.due if fire.check_at is None else fire.check_at)}",
        "Nats-Schedule-Target": fire_subject(fire.workflow, fire.trigger),
    }
    if after_seq is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(after_seq)
    subject = cron_subject(fire.workflow, fire.trigger)
    with unavailable_as(f"set the schedule {subject}"):
        try:
            await js.publish(subject, msgspec.json.encode(fire), headers=headers)
        except APIError as exc:
            if exc.err_code == 10071:  # wrong last sequence: someone else set it first
                return False
            raise
    return True


async def current_fire(js: JetStreamContext, workflow: str, index: int) -> tuple[int, Fire | None]:
    """The stream sequence and body of trigger ``index``'s schedule; ``(0, None)`` when
    none is set, ``(seq, None)`` when its body is not a ``Fire``."""
    subject = cron_subject(workflow, index)
    with unavailable_as(f"read the schedule {subject}"):
        try:
            msg = await js.get_last_msg(SCHEDULES_STREAM, subject)
        except NotFoundError:
            return 0, None
    try:
        return msg.seq or 0, decode_fire(msg.data or b"")
    except msgspec.DecodeError:
        return msg.seq or 0, None


async def drop_schedules(js: JetStreamContext, workflow: str, keep: frozenset[int]) -> int:
    """Remove the schedules of ``workflow``'s triggers not in ``keep``; how many went."""
    pattern = cron_subject(workflow, "*")
    with unavailable_as(f"drop the schedules {pattern}"):
        info = await js.stream_info(SCHEDULES_STREAM, subjects_filter=pattern)
        dropped = 0
        for subject in info.state.subjects or {}:
            index = subject.rsplit(".", 1)[1]
            if not index.isdigit() or int(index) not in keep:
                await js.purge_stream(SCHEDULES_STREAM, subject=subject)
                dropped += 1
    return dropped


async def follow_deploys(
    js: JetStreamContext,
    on_change: Callable[[str, str | None], Awaitable[None]],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``on_change(workflow, latest version or None when deleted)`` for every
    deployed workflow, then for every deploy or deletion on any instance (until
    cancelled); ready once the deployed ones have been seen."""
    kv = await bind_bucket(js, WORKFLOWS_BUCKET)
    with unavailable_as(f"watch the latest versions in {WORKFLOWS_BUCKET}"):
        watcher = await kv.watch("*.latest")
    started = False
    try:
        async for entry in watcher:
            if entry is None:  # the end of the initial values
                if not started:
                    task_status.started()
                    started = True
                continue
            name = entry.key[: -len(".latest")]
            await on_change(name, entry.value.decode() if entry.value else None)
    finally:
        with anyio.move_on_after(2, shield=True):
            await watcher.stop()  # type: ignore[no-untyped-call]
