"""natsflow's streams, subjects, consumers and KV buckets, provisioned idempotently.

Every subject natsflow owns starts with ``natsflow.``:

- ``natsflow.ev.<execution>``   the execution's event batches (stream NATSFLOW_EVENTS)
- ``natsflow.snap.<execution>`` its latest snapshot (same stream, rolled up per subject)
- ``natsflow.in.<execution>``   what its actor reacts to: start, cancel, signal, resume,
                                 pause, timers, child_ended (stream NATSFLOW_INBOX, work
                                 queue); only natsflow itself publishes there
- ``natsflow.result.<partition>.<execution>`` workers' results and progress (same stream,
                                 read by the same consumer, so in order with the inbox);
                                 the actor accepts nothing else there
- ``natsflow.sched.<execution>.<timer>`` durable timers: message schedules that fire
                                 into ``natsflow.in.<execution>`` (same stream)
- ``natsflow.cron.<workflow>.<i>`` the next due time of schedule trigger ``i``: one ``@at``
                                 message schedule (stream NATSFLOW_SCHEDULES, work queue)
- ``natsflow.fire.<workflow>.<i>`` what that schedule publishes when due (same stream)
- ``natsflow.retention.every`` / ``.sweep`` the retention sweeps' ``@every`` schedule and
                                 its fires (same stream, consumer natsflow-retention)
- ``natsflow.task.<action>``     step attempts for workers (stream NATSFLOW_TASKS, work queue)
- ``natsflow.dlq.<reason>``      what could not be processed (stream NATSFLOW_DLQ)
- ``natsflow.api.<verb>``        the admin micro service (``natsflow.service.protocol``)
- ``natsflow.cancel.<execution>`` cancel notices to workers (core NATS, no stream)
- ``natsflow.feed.<workflow>.<execution>.<type>`` every stored event, as JSON (core NATS,
                                 no stream: ``natsflow.events.feed``)

KV buckets: ``natsflow_workflows`` (definitions), ``natsflow_executions`` (``ls`` rows),
``natsflow_idempotency`` (claims), ``natsflow_waits`` (open subject waits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from natsflow.actors.jetstream.errors import unavailable, unavailable_as
from natsflow.code.ids import app_of
from natsflow.events.errors import NotFound
from natsflow.manifests.actions import worker_actions

EVENTS_STREAM = "NATSFLOW_EVENTS"
INBOX_STREAM = "NATSFLOW_INBOX"
TASKS_STREAM = "NATSFLOW_TASKS"
DLQ_STREAM = "NATSFLOW_DLQ"
SCHEDULES_STREAM = "NATSFLOW_SCHEDULES"
ARCHIVE_STREAM = "NATSFLOW_ARCHIVE"

ACTORS_CONSUMER = "natsflow-actors"
WORKERS_CONSUMER = "natsflow-workers"
SCHEDULER_CONSUMER = "natsflow-scheduler"
RETENTION_CONSUMER = "natsflow-retention"

WORKFLOWS_BUCKET = "natsflow_workflows"
EXECUTIONS_BUCKET = "natsflow_executions"
IDEMPOTENCY_BUCKET = "natsflow_idempotency"
WAITS_BUCKET = "natsflow_waits"  # open subject waits: see actors/jetstream/waits.py


def events_subject(execution: str) -> str:
    return f"natsflow.ev.{execution}"


def snapshot_subject(execution: str) -> str:
    return f"natsflow.snap.{execution}"


def inbox_subject(execution: str) -> str:
    app = app_of(execution)
    if app is not None:  # a code execution: its app's processes run it
        return f"{APP_PREFIX}{app}.in.{execution}"
    return f"natsflow.in.{execution}"


# Code workflows (``natsflow.code``): an execution ``<app>==...`` has its inbox on
# ``natsflow.app.<app>.in.<id>`` and its results on ``natsflow.app.<app>.result.<p>.<id>``
# (same stream), read by the app's own consumer ``natsflow-app-<app>``, never the service's.
APP_PREFIX = "natsflow.app."
APP_SUBJECTS = "natsflow.app.>"


def app_consumer(app: str) -> str:
    return f"natsflow-app-{app}"


def app_steps_consumer(app: str) -> str:
    return f"natsflow-app-{app}-steps"


PARTITIONS = 64
"""How many partition tokens the subjects routing to an execution use (DESIGN: several
instances may later each own a set of partitions); fixed: it is inside stored messages."""


def partition(execution: str) -> int:
    """The partition of ``execution``: a stable hash of its id, in ``range(PARTITIONS)``."""
    return int.from_bytes(hashlib.sha1(execution.encode()).digest()[:4], "big") % PARTITIONS


RESULT_PREFIX = "natsflow.result."
RESULT_SUBJECTS = "natsflow.result.>"


def result_subject(execution: str) -> str:
    """Where workers answer ``execution``'s tasks (a task's ``reply_to``): results and
    progress only, never control messages, so a worker needs no right to the inbox."""
    app = app_of(execution)
    if app is not None:
        return f"{APP_PREFIX}{app}.result.{partition(execution)}.{execution}"
    return f"{RESULT_PREFIX}{partition(execution)}.{execution}"


def is_result_subject(subject: str) -> bool:
    if subject.startswith(APP_PREFIX):
        return subject.split(".", 4)[3] == "result"
    return subject.startswith(RESULT_PREFIX)


def summary_subject(execution: str) -> str:
    """The KV key of the execution's ``ls`` row, as a subject (a put is a publish)."""
    return f"$KV.{EXECUTIONS_BUCKET}.{execution}"


def timers_subject(execution: str) -> str:
    """Every timer of ``execution`` (a wildcard, to purge them all at once)."""
    return f"natsflow.sched.{execution}.*"


def timer_subject(execution: str, timer_id: str) -> str:
    # Step keys come from data (for_each keys), so a hash keeps the token subject-safe.
    token = hashlib.sha1(timer_id.encode()).hexdigest()[:20]
    return f"natsflow.sched.{execution}.{token}"


def cancel_subject(execution: str) -> str:
    """Where workers hear that ``execution`` was cancelled (core NATS: every worker
    process subscribes to ``CANCEL_SUBJECTS``)."""
    return f"natsflow.cancel.{execution}"


CANCEL_SUBJECTS = "natsflow.cancel.*"


def task_subject(action: str) -> str:
    return f"natsflow.task.{action.replace('.', '_')}"


def worker_task_subjects() -> list[str]:
    """The task subjects the workers' consumer filters: one per catalogue worker action."""
    return [task_subject(action) for action in worker_actions()]


def cron_subject(workflow: str, index: int | str) -> str:
    """The schedule message of trigger ``index`` of ``workflow`` (``"*"``: all of them)."""
    return f"natsflow.cron.{workflow}.{index}"


def fire_subject(workflow: str, index: int) -> str:
    return f"natsflow.fire.{workflow}.{index}"


RETENTION_SCHEDULE = "natsflow.retention.every"
"""The ``@every`` message schedule of retention sweeps (stream NATSFLOW_SCHEDULES)."""
RETENTION_SWEEPS = "natsflow.retention.sweep"
"""What that schedule publishes: one sweep, taken by one instance (``RETENTION_CONSUMER``)."""


def dlq_subject(reason: str) -> str:
    return f"natsflow.dlq.{reason}"


# The streams whose writes the publisher may group into atomic batches (``allow_atomic``),
# by the second token of natsflow's subjects; the executions bucket's stream by its prefix.
_ATOMIC_STREAMS = {
    "ev": EVENTS_STREAM,
    "snap": EVENTS_STREAM,
    "in": INBOX_STREAM,
    "sched": INBOX_STREAM,
    "result": INBOX_STREAM,
    "app": INBOX_STREAM,
    "task": TASKS_STREAM,
}
_SUMMARY_PREFIX = f"$KV.{EXECUTIONS_BUCKET}."
_CLAIM_PREFIX = f"$KV.{IDEMPOTENCY_BUCKET}."
ATOMIC_BUCKETS = (EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET)


def atomic_stream(subject: str) -> str | None:
    """The stream that stores ``subject`` if natsflow provisions it with atomic batches on,
    else None (the dead letters, the other buckets, subjects that are not natsflow's)."""
    if subject.startswith("natsflow."):
        end = subject.find(".", 9)
        return _ATOMIC_STREAMS.get(subject[9:end]) if end > 0 else None
    if subject.startswith(_SUMMARY_PREFIX):
        return f"KV_{EXECUTIONS_BUCKET}"
    if subject.startswith(_CLAIM_PREFIX):
        return f"KV_{IDEMPOTENCY_BUCKET}"
    return None


def execution_from_subject(subject: str) -> str:
    """``natsflow.in.<id>`` or ``natsflow.result.<partition>.<id>`` -> ``<id>`` (and the
    same under ``natsflow.app.<app>.``)."""
    if subject.startswith(APP_PREFIX):
        parts = subject.split(".", 5)
        return parts[5] if parts[3] == "result" else subject.split(".", 4)[4]
    if subject.startswith(RESULT_PREFIX):
        return subject.split(".", 3)[3]
    return subject.split(".", 2)[2]


def stream_configs(
    *, archive: bool, archive_max_age_days: float, replicas: int = 1
) -> list[api.StreamConfig]:
    file = api.StorageType.FILE
    configs = [
        api.StreamConfig(
            name=EVENTS_STREAM,
            subjects=["natsflow.ev.>", "natsflow.snap.>"],
            storage=file,
            allow_direct=True,
            allow_rollup_hdrs=True,
            duplicate_window=120,
            description="natsflow execution events and snapshots",
            allow_atomic=True,
        ),
        api.StreamConfig(
            name=INBOX_STREAM,
            subjects=["natsflow.in.>", "natsflow.sched.>", RESULT_SUBJECTS, APP_SUBJECTS],
            storage=file,
            retention=api.RetentionPolicy.WORK_QUEUE,
            allow_msg_schedules=True,
            duplicate_window=120,
            description="natsflow actor inboxes and durable timers",
            allow_atomic=True,
        ),
        api.StreamConfig(
            name=TASKS_STREAM,
            subjects=["natsflow.task.>"],
            storage=file,
            retention=api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=120,
            description="natsflow step attempts for workers",
            allow_atomic=True,
        ),
        api.StreamConfig(
            name=SCHEDULES_STREAM,
            subjects=["natsflow.cron.>", "natsflow.fire.>", "natsflow.retention.>"],
            storage=file,
            retention=api.RetentionPolicy.WORK_QUEUE,
            allow_msg_schedules=True,
            description="natsflow schedule triggers: the next due time of each, and its fires",
        ),
        api.StreamConfig(
            name=DLQ_STREAM,
            subjects=["natsflow.dlq.>"],
            storage=file,
            max_age=30 * 86400,
            description="natsflow dead letters: messages that could not be processed",
        ),
    ]
    for config in configs:
        config.num_replicas = replicas
    if archive:
        configs.append(
            api.StreamConfig(
                name=ARCHIVE_STREAM,
                storage=file,
                max_age=archive_max_age_days * 86400,
                allow_direct=True,
                sources=[api.StreamSource(name=EVENTS_STREAM, filter_subject="natsflow.ev.>")],
                description="natsflow full event history (audit trail)",
                num_replicas=replicas,
            )
        )
    return configs


async def ensure_stream(
    js: JetStreamContext, config: api.StreamConfig, *, keep_replicas: bool = False
) -> None:
    """Create the stream, or bring an existing one's config up to date (with
    ``keep_replicas``, an existing stream keeps its replica count)."""
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != 10058:  # "stream name already in use with a different configuration"
            raise
        if keep_replicas:
            assert config.name is not None
            existing = await js.stream_info(config.name)
            config.num_replicas = existing.config.num_replicas
        await js.update_stream(config)


async def provision(
    js: JetStreamContext,
    *,
    ack_wait: float,
    archive: bool = False,
    archive_max_age_days: float = 30,
    replicated: bool = False,
) -> None:
    """Create every stream, consumer and bucket natsflow needs; safe to run on each start.

    ``replicated`` makes them R3 (existing ones are scaled up); otherwise new ones
    are R1 and existing ones keep their replicas. Raises ``Unavailable`` when NATS
    (or JetStream) does not answer.
    """
    with unavailable_as("provision natsflow's streams, consumers and KV buckets"):
        await _provision(js, ack_wait, archive, archive_max_age_days, replicated)


async def _provision(
    js: JetStreamContext,
    ack_wait: float,
    archive: bool,
    archive_max_age_days: float,
    replicated: bool,
) -> None:
    replicas = 3 if replicated else 1
    configs = stream_configs(
        archive=archive, archive_max_age_days=archive_max_age_days, replicas=replicas
    )
    for config in configs:
        await ensure_stream(js, config, keep_replicas=not replicated)
    await js.add_consumer(
        INBOX_STREAM,
        api.ConsumerConfig(
            durable_name=ACTORS_CONSUMER,
            # Results in the same stream and consumer as the inbox: one order per execution.
            filter_subjects=["natsflow.in.>", RESULT_SUBJECTS],
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=20000,
            max_waiting=512,
        ),
    )
    await js.add_consumer(
        TASKS_STREAM,
        api.ConsumerConfig(
            durable_name=WORKERS_CONSUMER,
            filter_subjects=worker_task_subjects(),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=20000,
            max_waiting=512,
        ),
    )
    await js.add_consumer(
        SCHEDULES_STREAM,
        api.ConsumerConfig(
            durable_name=SCHEDULER_CONSUMER,
            filter_subject="natsflow.fire.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=1000,
        ),
    )
    await js.add_consumer(
        SCHEDULES_STREAM,
        api.ConsumerConfig(
            durable_name=RETENTION_CONSUMER,
            filter_subject=RETENTION_SWEEPS,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=1,  # one sweep at a time, across every instance
        ),
    )
    for bucket in (WORKFLOWS_BUCKET, EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET, WAITS_BUCKET):
        await ensure_bucket(js, bucket, replicas=replicas)


async def find_missing(
    js: JetStreamContext, *, actors: bool, workers: bool, archive: bool = False
) -> list[str]:
    """What of natsflow's topology a process needs and cannot find, in words.

    Every stream and KV bucket ``provision`` makes (each process reads and writes
    them all), the actors' consumer when ``actors``, the workers' when ``workers``:
    e.g. ``["consumer natsflow-workers on NATSFLOW_TASKS"]``; empty when all is
    there. Raises ``Unavailable`` when NATS does not answer.
    """
    found: list[str] = []
    with unavailable_as("check natsflow's streams and consumers"):
        configs = stream_configs(archive=archive, archive_max_age_days=30)
        streams = {f"stream {c.name}": str(c.name) for c in configs}
        for bucket in (WORKFLOWS_BUCKET, EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET, WAITS_BUCKET):
            streams[f"KV bucket {bucket}"] = f"KV_{bucket}"
        for what, stream in streams.items():
            try:
                await js.stream_info(stream)
            except NotFoundError:
                found.append(what)
        consumers = (
            [(INBOX_STREAM, ACTORS_CONSUMER), (SCHEDULES_STREAM, SCHEDULER_CONSUMER)]
            if actors
            else []
        )
        consumers += [(TASKS_STREAM, WORKERS_CONSUMER)] if workers else []
        for stream, consumer in consumers:
            if f"stream {stream}" in found:
                found.append(f"consumer {consumer} on {stream}")  # went with its stream
                continue
            try:
                await js.consumer_info(stream, consumer)
            except NotFoundError:
                found.append(f"consumer {consumer} on {stream}")
    return found


async def ensure_bucket(js: JetStreamContext, bucket: str, *, replicas: int = 1) -> None:
    """A KV bucket with direct gets on (``ls`` reads every summary in one batch), atomic
    batches on for the buckets in ``ATOMIC_BUCKETS`` (the publisher groups their puts);
    an existing one is scaled up to ``replicas``, never down."""
    try:
        await js.key_value(bucket)
    except BucketNotFoundError:
        await js.create_key_value(
            api.KeyValueConfig(
                bucket=bucket,
                history=1,
                storage=api.StorageType.FILE,
                direct=True,
                replicas=replicas,
            )
        )
    info = await js.stream_info(f"KV_{bucket}")
    atomic = bucket in ATOMIC_BUCKETS
    scale_up = (info.config.num_replicas or 1) < replicas
    if not info.config.allow_direct or (atomic and not info.config.allow_atomic) or scale_up:
        info.config.allow_direct = True
        info.config.allow_atomic = info.config.allow_atomic or atomic
        info.config.num_replicas = max(info.config.num_replicas or 1, replicas)
        await js.update_stream(info.config)


async def stream_replicas(js: JetStreamContext) -> int:
    """Replicas of the events stream (the one whose loss would lose executions)."""
    with unavailable_as(f"read the config of stream {EVENTS_STREAM}"):
        info = await js.stream_info(EVENTS_STREAM)
    return info.config.num_replicas or 1


async def bind_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """The KV bucket ``bucket``; not provisioned yet, or no answer: ``Unavailable``."""
    what = f"open the KV bucket {bucket}"
    with unavailable_as(what):
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            raise unavailable(what, "the bucket is not provisioned yet") from None


@contextmanager
def _stream_missing(app: str) -> Iterator[None]:
    try:
        yield
    except NotFoundError as exc:  # 10059: stream not found
        raise NotFound(f"app {app}: natsflow's streams are not provisioned ({exc})") from None


async def provision_app(
    js: JetStreamContext, app: str, step_subjects: list[str], *, ack_wait: float
) -> None:
    """The consumers of a code app: its executions' inbox and results, and its steps'
    tasks (every step's subject: a work queue refuses overlapping filters, so no other
    consumer may filter them). Safe to run on each start of each of its processes.
    natsflow's streams not there yet: ``NotFound`` (then ``provision`` first)."""
    with unavailable_as(f"create the consumers of app {app}"), _stream_missing(app):
        await js.add_consumer(
            INBOX_STREAM,
            api.ConsumerConfig(
                durable_name=app_consumer(app),
                filter_subject=f"{APP_PREFIX}{app}.>",
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_ack_pending=20000,
                max_waiting=512,
            ),
        )
        if step_subjects:
            await js.add_consumer(
                TASKS_STREAM,
                api.ConsumerConfig(
                    durable_name=app_steps_consumer(app),
                    filter_subjects=step_subjects,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_ack_pending=20000,
                    max_waiting=512,
                ),
            )
