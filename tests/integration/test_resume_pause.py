"""Steering executions: resume a failed one (from the failure or ``--from`` a step), pause
and unpause a running one; against a real nats-server, observed through show and history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from natsflow.events.errors import Conflict, InputError
from natsflow.service.embedded import EmbeddedServer
from tests.eventually import eventually
from tests.integration.harness import running

# Each step appends "<step> <idempotency key>" to the file in input.path; s8 fails
# unless the file in input.marker exists.
APPEND = 'echo "$2 $NATSFLOW_IDEMPOTENCY_KEY" >> "$0"'
GUARDED = 'test -e "$1" || { echo "no marker yet" >&2; exit 3; }; ' + APPEND


def _chain(name: str, size: int, special: dict[int, str]) -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(1, size + 1):
        script = special.get(i, APPEND).replace("'", "''")
        lines += [
            f"  s{i}:",
            "    action: shell",
            *([f"    needs: [s{i - 1}]"] if i > 1 else []),
            "    with:",
            f"      argv: [sh, -c, '{script}', '${{{{ input.path }}}}',"
            f" '${{{{ input.marker }}}}', s{i}]",
        ]
    return "\n".join(lines) + "\n"


TEN = _chain("ten", 10, {8: GUARDED})
# s2 runs until the file in input.marker exists: the test decides when it ends.
GATED = 'while [ ! -e "$1" ]; do sleep 0.05; done; ' + APPEND
FIVE = _chain("five", 5, {2: GATED})


def lines_of(path: Path) -> list[tuple[str, str]]:
    """(step, idempotency key) of each line the steps appended."""
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def types(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e.get("step")) for e in events]


async def test_resume_runs_only_the_failed_step_and_what_follows(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    out, marker = tmp_path / "out.txt", tmp_path / "marker"
    async with running(nats_server) as engine:
        await engine.deploy(TEN)
        execution = await engine.start("ten", {"path": str(out), "marker": str(marker)})
        failed = await engine.wait_done(execution, timeout=30)
        assert failed["status"] == "failed", failed
        assert failed["resume_at"] == "s8"
        assert [step for step, _ in lines_of(out)] == [f"s{i}" for i in range(1, 8)]

        # Only a failed execution resumes; an unknown --from step is named.
        with pytest.raises(InputError, match="no step 'nope'"):
            await engine.client.resume(execution, from_step="nope")

        marker.touch()
        answer = await engine.client.resume(execution)
        assert answer.resume_at == "s8"
        done = await engine.wait_done(execution, timeout=30)
        assert done["status"] == "completed", done
        with pytest.raises(Conflict, match="only a failed one can be resumed"):
            await engine.client.resume(execution)
        events = await engine.history(execution)

    written = lines_of(out)
    # Steps 1-7 ran once, before the resume; 8-10 after it, s8 with its next attempt number.
    assert [step for step, _ in written] == [f"s{i}" for i in range(1, 11)]
    assert dict(written)["s8"] == f"{execution}:s8:2"
    assert dict(written)["s1"] == f"{execution}:s1:1"
    resumed = types(events).index(("execution_resumed", None))
    assert ("step_scheduled", "s7") not in types(events)[resumed:]
    assert next(e for e in events if e["type"] == "execution_resumed")["retried"] == ["s8"]
    s8 = done["steps"]["s8"]
    assert [a["attempt"] for a in s8["attempts"]] == [1, 2]
    assert s8["attempts"][0]["error"]
    assert s8["attempts"][1]["error"] is None


async def test_resume_from_a_step_reruns_it_and_its_dependants(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    out, marker = tmp_path / "out.txt", tmp_path / "marker"
    async with running(nats_server) as engine:
        await engine.deploy(TEN)
        execution = await engine.start("ten", {"path": str(out), "marker": str(marker)})
        assert (await engine.wait_done(execution, timeout=30))["status"] == "failed"
        marker.touch()
        answer = await engine.client.resume(execution, from_step="s6")
        assert answer.resume_at == "s6"
        done = await engine.wait_done(execution, timeout=30)
    assert done["status"] == "completed", done
    written = lines_of(out)
    steps = [step for step, _ in written]
    assert steps == [f"s{i}" for i in range(1, 8)] + [f"s{i}" for i in range(6, 11)]
    # Re-run steps number their attempts after the earlier ones: no key repeats.
    keys = [key for _, key in written]
    assert len(set(keys)) == len(keys)
    assert keys[-5:] == [
        f"{execution}:s6:2",
        f"{execution}:s7:2",
        f"{execution}:s8:2",
        f"{execution}:s9:1",
        f"{execution}:s10:1",
    ]


async def test_pause_dispatches_nothing_new_until_unpause(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    async with running(nats_server) as engine:
        await engine.deploy(FIVE)
        execution = await engine.start("five", {"path": str(out), "marker": str(gate)})

        async def s2_running() -> None:
            shown = await engine.show(execution)
            assert shown["steps"].get("s2", {}).get("status") == "scheduled", shown

        await eventually(s2_running, within=20)
        assert (await engine.client.pause(execution)).changed

        async def paused() -> dict[str, Any]:
            shown = await engine.show(execution)
            assert shown["paused"], shown
            return shown

        await eventually(paused, within=10)
        assert not (await engine.client.pause(execution)).changed  # paused already: a no-op
        assert [r["paused"] for r in await engine.ls() if r["execution_id"] == execution] == [True]

        gate.touch()  # s2 finishes while paused: its result is recorded, s3 not dispatched

        async def s2_done() -> dict[str, Any]:
            shown = await engine.show(execution)
            assert shown["steps"]["s2"]["status"] == "completed", shown
            return shown

        shown = await eventually(s2_done, within=20)
        assert shown["status"] == "running"
        assert shown["paused"]
        assert shown["steps"]["s3"]["status"] == "pending", shown  # planned, not dispatched
        assert ("step_scheduled", "s3") not in types(await engine.history(execution))

        assert (await engine.client.unpause(execution)).changed
        done = await engine.wait_done(execution, timeout=30)
        with pytest.raises(Conflict, match="only a running one can be paused"):
            await engine.client.pause(execution)
        events = types(await engine.history(execution))
    assert done["status"] == "completed", done
    assert not done["paused"]
    assert [step for step, _ in lines_of(out)] == ["s1", "s2", "s3", "s4", "s5"]
    order = [
        events.index(("execution_paused", None)),
        events.index(("step_completed", "s2")),
        events.index(("execution_unpaused", None)),
        events.index(("step_scheduled", "s3")),
    ]
    assert order == sorted(order)
