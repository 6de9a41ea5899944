"""awaits_result: the one test for "is this attempt's result still wanted"."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from natsflow.events.model import INITIAL, ExecutionState, StepState, awaits_result

RUNNING = replace(
    INITIAL,
    execution_id="e",
    status="running",
    steps={"a": StepState(status="scheduled", action="noop", attempt=2, iteration=1)},
)


def test_the_current_attempt_of_a_scheduled_step_is_awaited() -> None:
    assert awaits_result(RUNNING, "a", 2, 1)


@given(
    status=st.sampled_from(["pending", "scheduled", "waiting", "completed", "failed", "skipped"]),
    execution=st.sampled_from(["pending", "running", "completed", "failed", "cancelled"]),
    attempt=st.integers(1, 4),
    iteration=st.integers(0, 3),
    step=st.sampled_from(["a", "b"]),
)
def test_anything_else_is_not(
    status: str, execution: str, attempt: int, iteration: int, step: str
) -> None:
    steps = {"a": replace(RUNNING.steps["a"], status=status)}
    state: ExecutionState = replace(RUNNING, status=execution, steps=steps)
    expected = (status, execution, attempt, iteration, step) == ("scheduled", "running", 2, 1, "a")
    assert awaits_result(state, step, attempt, iteration) is expected
