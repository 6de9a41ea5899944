"""``step_context()``: set around a running ``@step`` function (async or sync, in its
thread), unset everywhere else, with an error naming the misuse."""

from __future__ import annotations

import anyio
import pytest

import natsflow
from natsflow.actors.actions import ActionContext
from natsflow.actors.apps import step_registry
from natsflow.code import CodeApp, NotInStep, StepContext, step, step_context
from natsflow.code.api import CURRENT
from natsflow.code.step_context import running_step

SEEN: list[StepContext] = []


@step
async def remote(name: str) -> str:
    ctx = step_context()
    SEEN.append(ctx)
    await ctx.progress(f"sending {name}")
    return ctx.idempotency_key


@step
def local(name: str) -> str:
    ctx = step_context()  # in anyio's worker thread
    SEEN.append(ctx)
    anyio.from_thread.run(ctx.progress, f"writing {name}")
    return ctx.idempotency_key


def _action_context(step_key: str, attempt: int, progress: list[str]) -> ActionContext:
    async def report(text: str) -> None:
        progress.append(text)

    return ActionContext(
        execution_id="ukey==keys-01",
        step=step_key,
        attempt=attempt,
        idempotency_key=f"ukey==keys-01:{step_key}:{attempt}",
        report_progress=report,
    )


def test_outside_a_step_the_error_names_the_misuse() -> None:
    with pytest.raises(NotInStep, match=r"outside a running @step function"):
        step_context()
    assert issubclass(NotInStep, natsflow.NatsflowError)


def test_inside_a_workflow_function_the_error_says_it_has_no_attempt() -> None:
    token = CURRENT.set(object())  # type: ignore[arg-type]  # any decider context will do
    try:
        with pytest.raises(NotInStep, match=r"inside a @workflow function"):
            step_context()
    finally:
        CURRENT.reset(token)


def test_running_step_sets_it_for_the_block_only() -> None:
    ctx = StepContext(
        execution_id="e", step="s#0", attempt=2, idempotency_key="e:s#0:2", report_progress=_noop
    )
    with running_step(ctx):
        assert step_context() is ctx
        assert natsflow.step_context() is ctx
    with pytest.raises(NotInStep):
        step_context()


async def _noop(text: str) -> None:
    pass


async def test_an_app_step_reads_its_attempt_async_and_sync() -> None:
    SEEN.clear()
    progress: list[str] = []
    registry = step_registry(CodeApp("ukey", steps={"remote": remote, "local": local}))
    first = await registry.get("ukey.remote")(
        _action_context("remote#0", 1, progress), {"args": ["a"]}
    )
    second = await registry.get("ukey.remote")(
        _action_context("remote#0", 2, progress), {"args": ["a"]}
    )
    synced = await registry.get("ukey.local")(
        _action_context("local#1", 1, progress), {"args": ["b"]}
    )
    assert (first, second, synced) == (
        "ukey==keys-01:remote#0:1",
        "ukey==keys-01:remote#0:2",
        "ukey==keys-01:local#1:1",
    )
    assert [(c.execution_id, c.step, c.attempt) for c in SEEN] == [
        ("ukey==keys-01", "remote#0", 1),
        ("ukey==keys-01", "remote#0", 2),
        ("ukey==keys-01", "local#1", 1),
    ]
    assert progress == ["sending a", "sending a", "writing b"]
    with pytest.raises(NotInStep):  # reset after the step, also after the thread
        step_context()
