"""The shipped Grafana dashboard queries only metrics that Metrics exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsflow.actors.metrics import Metrics

DASHBOARD = (
    Path(__file__).resolve().parents[2]
    / "natsflow"
    / "service"
    / "grafana"
    / "natsflow-dashboard.json"
)
NAME = re.compile(r"natsflow_[a-z_]+")


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, query) for every panel target and every templating query."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"${variable['name']}", variable["definition"]


def test_every_query_names_an_exported_metric() -> None:
    exported = Metrics().sample_names()
    queries = list(_queries(_load()))
    assert queries
    for where, query in queries:
        names = NAME.findall(query)
        assert names, f"{where}: {query!r} names no natsflow_ metric"
        for name in names:
            assert name in exported, f"{where}: {name} is not exported by Metrics"


def test_every_graph_panel_has_a_query_and_uses_the_datasource_variable() -> None:
    dashboard = _load()
    assert dashboard["schemaVersion"] >= 39
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    graphs = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in graphs:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize(
    "fragment",
    [
        "executions started",
        "finished",
        "execution duration p50 / p99",
        "step attempts",
        "step duration p99 by action",
        "active actors",
        "activation latency",
        "conflicts",
        "dead letters",
        "worker tasks in flight",
        "custom action queue depth",
    ],
)
def test_the_required_panels_are_there(fragment: str) -> None:
    titles = [p["title"].lower() for p in _panels(_load()["panels"])]
    assert any(fragment in title for title in titles), fragment


def test_sample_names_follow_prometheus_client_suffixes() -> None:
    names = Metrics().sample_names()
    assert "natsflow_executions_started_total" in names
    assert "natsflow_executions_started" not in names
    assert "natsflow_step_duration_seconds_bucket" in names
    assert "natsflow_step_duration_seconds_count" in names
    assert "natsflow_active_actors" in names
    assert "natsflow_active_actors_total" not in names
    assert all(name.startswith("natsflow_") for name in names)


def test_render_lists_every_family_once_labelled() -> None:
    metrics = Metrics()
    metrics.executions_finished.labels(workflow="w", status="completed").inc()
    metrics.step_duration.labels(action="shell").observe(0.012)
    metrics.active_actors.set(3)
    text = metrics.render().decode()
    assert 'natsflow_executions_finished_total{status="completed",workflow="w"} 1.0' in text
    assert 'natsflow_step_duration_seconds_bucket{action="shell",le="0.025"} 1.0' in text
    assert "natsflow_active_actors 3.0" in text
    emitted = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert emitted <= metrics.sample_names()


def test_two_instances_do_not_share_state() -> None:
    a, b = Metrics(), Metrics()
    a.decisions.inc()
    assert "natsflow_decisions_total 1.0" in a.render().decode()
    assert "natsflow_decisions_total 0.0" in b.render().decode()
