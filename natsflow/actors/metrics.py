"""Prometheus metrics, each process holding its own registry (no global state).

Every name starts with ``natsflow_``; ``service/grafana/natsflow-dashboard.json``
queries only names from ``Metrics.sample_names()`` (a test checks it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""Content type of ``Metrics.render()``: the Prometheus text format 0.0.4."""

# Whole executions and steps: milliseconds (noop) to hours (sleeps, waits, children).
_LONG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0,
)  # fmt: skip
# Step handlers: mostly milliseconds to minutes.
_STEP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
)  # fmt: skip
# Engine internals (JetStream appends, activations): tens of microseconds to seconds.
_FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


_Labelled = Counter | Histogram | Gauge


class Metrics:
    """natsflow's metrics in a private ``CollectorRegistry``; ``render()`` exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry

        # Executions.
        self.executions_started = Counter(
            "natsflow_executions_started_total",
            "Executions started, by workflow.",
            ["workflow"],
            registry=r,
        )
        self.executions_finished = Counter(
            "natsflow_executions_finished_total",
            "Executions finished, by workflow and status (completed|failed|cancelled).",
            ["workflow", "status"],
            registry=r,
        )
        self.execution_duration = Histogram(
            "natsflow_execution_duration_seconds",
            "Wall time from an execution's start to its end, by workflow.",
            ["workflow"],
            buckets=_LONG_BUCKETS,
            registry=r,
        )

        # Steps.
        self.steps_dispatched = Counter(
            "natsflow_steps_dispatched_total",
            "Step tasks published to workers, by action.",
            ["action"],
            registry=r,
        )
        self.step_attempts = Counter(
            "natsflow_step_attempts_total",
            "Step attempts that ended, by action and outcome (completed|failed|retrying).",
            ["action", "outcome"],
            registry=r,
        )
        self.step_duration = Histogram(
            "natsflow_step_duration_seconds",
            "Duration of one step attempt in its worker, by action.",
            ["action"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )

        # Execution actors.
        self.active_actors = Gauge(
            "natsflow_active_actors",
            "Execution actors held in memory by this process.",
            registry=r,
        )
        self.actor_activations = Counter(
            "natsflow_actor_activations_total",
            "Execution actors activated (state rebuilt from snapshot and tail).",
            registry=r,
        )
        self.actor_activation_seconds = Histogram(
            "natsflow_actor_activation_seconds",
            "Time to activate an execution actor: read snapshot and tail, fold.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "natsflow_decisions_total",
            "Decisions appended to execution histories.",
            registry=r,
        )
        self.decision_conflicts = Counter(
            "natsflow_decision_conflicts_total",
            "Appends refused because another decider appended first (wrong last sequence).",
            registry=r,
        )
        self.append_seconds = Histogram(
            "natsflow_append_seconds",
            "Latency of an acknowledged append to an execution's history.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.snapshots_written = Counter(
            "natsflow_snapshots_written_total",
            "State snapshots written (each rolls up the history before it).",
            registry=r,
        )
        self.inbox_messages = Counter(
            "natsflow_inbox_messages_total",
            "Messages delivered to execution actors, by kind.",
            ["kind"],
            registry=r,
        )

        # Triggers, schedules, dead letters and workers.
        self.trigger_messages = Counter(
            "natsflow_trigger_messages_total",
            "Trigger messages, by outcome: accepted (started an execution), deduplicated "
            "(found the one it started before), rejected (dead-lettered).",
            ["outcome"],
            registry=r,
        )
        self.schedule_fires = Counter(
            "natsflow_schedule_fires_total",
            "Schedule due times taken, by outcome: started (an execution), deduplicated "
            "(found the one started before), missed (catchup: skip), overlap (the previous "
            "execution still runs: overlap: skip), queued (it waits for the previous one to "
            "end: overlap: queue; started or missed later), refused (the start was refused), "
            "dropped (a fire of a replaced version).",
            ["outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "natsflow_dead_letters_total",
            "Messages set aside for an operator, by reason.",
            ["reason"],
            registry=r,
        )
        self.worker_tasks_in_flight = Gauge(
            "natsflow_worker_tasks_in_flight",
            "Step tasks this process's workers are running now.",
            registry=r,
        )

        # Operators steering executions: resume, pause, unpause.
        self.executions_steered = Counter(
            "natsflow_executions_steered_total",
            "Executions resumed, paused or unpaused by an operator, by workflow and action "
            "(resumed|paused|unpaused); paused minus unpaused is how many are paused now.",
            ["workflow", "action"],
            registry=r,
        )

        # Custom actions' task queues: read from their consumers when scraped (``refresh``).
        self.action_queue_depth = Gauge(
            "natsflow_action_queue_depth",
            "Tasks of a custom action that no worker has taken yet (its consumer's pending "
            "count), by action; the same on every instance (take the max, not the sum).",
            ["action"],
            registry=r,
        )
        self.action_workers_pulling = Gauge(
            "natsflow_action_workers_pulling",
            "Pull requests waiting on a custom action's consumer (0: no worker is ready for "
            "its tasks), by action.",
            ["action"],
            registry=r,
        )
        # The execution index (``natsflow.actors.index``): what ``ls`` and ``stats`` read.
        self.index_lag = Gauge(
            "natsflow_index_lag",
            "Summary changes this process's execution index has not applied yet (messages).",
            registry=r,
        )
        self.index_applied = Counter(
            "natsflow_index_applied_total",
            "Summary changes applied to this process's execution index.",
            registry=r,
        )
        self.index_rebuilds = Counter(
            "natsflow_index_rebuilds_total",
            "Execution index rebuilds, by reason (missing, corrupt, schema, stream, asked).",
            ["reason"],
            registry=r,
        )
        self.retention_expired = Counter(
            "natsflow_retention_expired_total",
            "Finished executions removed from the streams past their workflow's retention.",
            ["workflow"],
            registry=r,
        )
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def on_refresh(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Have ``refresh()`` call ``refresh`` (a gauge read from elsewhere) before a scrape."""
        self._refreshers.append(refresh)

    async def refresh(self) -> None:
        """Bring the gauges read from elsewhere up to date (the HTTP sidecar, per scrape)."""
        for refresh in self._refreshers:
            await refresh()

    def child(self, metric: _Labelled, *values: str) -> Any:
        """``metric.labels(*values)``, cached: the lookup is measurable on the hot path."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> bytes:
        """Return every metric in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def sample_names(self) -> frozenset[str]:
        """Every sample name ``render()`` can emit (``_total``, ``_bucket``, ... included)."""
        names: set[str] = set()
        for family in self.registry.collect():
            for suffix in _SUFFIXES[family.type]:
                names.add(family.name + suffix)
        return frozenset(names)
