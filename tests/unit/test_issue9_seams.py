"""Where the parts of issue 9 meet: resume and fan-out ordering, resume and child
workflows, pause and waits, cancel and children (a review's findings, each pinned)."""

from __future__ import annotations

from natsflow.events.messages import Resume
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow
from tests.unit.strategies import Run
from tests.unit.test_decide import answer, scheduled


def _workflow(text: str) -> Workflow:
    return parse_manifest(text, "yaml", "test.yaml")


def test_resume_keeps_a_fan_out_items_soft_order() -> None:
    """An item run again by a resume (pending again) still waits for the items it
    comes ``after``: ``c`` needs ``a`` and comes after ``b``."""
    run = Run(
        _workflow(
            """
name: wf
steps:
  each:
    action: noop
    for_each:
      items: "${{ [{'k': 'a', 'n': [], 'l': []}, {'k': 'b', 'n': ['a'], 'l': []}, {'k': 'c', 'n': ['a'], 'l': ['b']}] }}"
      key: "${{ item.k }}"
      needs: "${{ item.n }}"
      after: "${{ item.l }}"
"""
        )
    )
    assert scheduled(run.start()) == ["each[a]"]
    answer(run, "each[a]", ok=False, message="down", retryable=False)
    assert run.state.status == "failed"
    run.apply(Resume())
    assert run.state.steps["each[c]"].item_after == ("each[b]",)
    assert scheduled(answer(run, "each[a]")) == ["each[b]"]  # not c: it comes after b
    assert scheduled(answer(run, "each[b]")) == ["each[c]"]
    answer(run, "each[c]")
    assert run.state.status == "completed"
