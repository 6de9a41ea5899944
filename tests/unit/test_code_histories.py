"""Golden histories of code workflows (``tests/histories/code/``) and the replayer users
run in CI (``natsflow.testing.check_history``, ``natsflow replay``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from examples.code import sync_docs
from natsflow import NondeterminismError, uuid, workflow
from natsflow.code import CodeApp, load_app
from natsflow.code.replay import CodeDecider
from natsflow.events.fold import fold
from natsflow.events.replay import replay
from natsflow.service.cli import main
from natsflow.testing import HistoryError, check_files, check_history
from tests.histories.golden import History, code_path_of, encode, read
from tests.histories.record import record_code

GOLDEN = code_path_of("sync_docs")


def golden() -> History:
    return read(GOLDEN)


def events_of(history: History) -> list[Any]:
    return [event for decision in history.decisions for event in decision.events]


def as_cli_json(history: History) -> bytes:
    """The history as ``natsflow history ID --json`` prints it (``seq`` on each event)."""
    events = [
        {"seq": i + 1, **msgspec.to_builtins(event)} for i, event in enumerate(events_of(history))
    ]
    return msgspec.json.encode({"execution_id": history.execution_id, "events": events})


@workflow(name="sync_docs")
async def pushes_first(order: sync_docs.SyncOrder) -> dict[str, Any]:
    ref = await sync_docs.create_sandbox(f"{order.repo.replace('/', '-')}-{uuid()[:8]}")
    await sync_docs.push(ref, order.repo)  # moved before sync_sources
    await sync_docs.sync_sources(ref, order.sources)
    return {}


@workflow(name="sync_docs")
async def skips_the_snapshot(order: sync_docs.SyncOrder) -> dict[str, Any]:
    ref = await sync_docs.create_sandbox(f"{order.repo.replace('/', '-')}-{uuid()[:8]}")
    await sync_docs.sync_sources(ref, order.sources)
    await sync_docs.push(ref, order.repo)
    return {}


def changed(flow: Any) -> CodeApp:
    return CodeApp("docs", {"sync_docs": flow}, load_app([sync_docs]).steps)


def test_the_code_golden_history_replays_to_its_decisions_and_state() -> None:
    history = golden()
    app = load_app([history.app or ""])
    decider = CodeDecider(app, app.workflows[history.workflow])
    state = replay(decider, history.execution_id, history.decisions)
    assert state == history.final_state
    assert state == fold(events_of(history))
    assert state.status == "completed"
    assert encode(history) == GOLDEN.read_bytes()


async def test_the_code_golden_history_is_as_the_recorder_records_it() -> None:
    """``python -m tests.histories.record --check`` for the code history."""
    history = await record_code("examples.code.sync_docs")
    assert encode(history) == GOLDEN.read_bytes(), "re-record: python -m tests.histories.record"


def test_a_reordered_workflow_no_longer_replays_the_golden_history() -> None:
    history = golden()
    decider = CodeDecider(changed(pushes_first), pushes_first)
    with pytest.raises(NondeterminismError) as info:
        replay(decider, history.execution_id, history.decisions)
    error = info.value
    assert error.position == 3  # the decision on create_sandbox's result
    assert error.expected.startswith("step_scheduled(push#1, attempt=1, action=docs.push")
    assert error.recorded.startswith("step_scheduled(sync_sources#1, attempt=1")


def test_the_replayer_accepts_the_history_the_cli_prints() -> None:
    checked = check_history(as_cli_json(golden()), sync_docs)
    assert (checked.workflow, checked.status, checked.calls) == ("sync_docs", "completed", 4)
    assert checked.execution == "docs==sync_docs-golden"


def test_the_replayer_names_position_expected_and_recorded_step() -> None:
    with pytest.raises(NondeterminismError) as info:
        check_history(as_cli_json(golden()), changed(pushes_first))
    error = info.value
    assert (error.execution, error.position) == ("docs==sync_docs-golden", 1)
    assert (error.expected, error.recorded) == ("push", "sync_sources")


def test_the_replayer_finds_a_workflow_that_ends_early() -> None:
    with pytest.raises(NondeterminismError) as info:
        check_history(as_cli_json(golden()), changed(skips_the_snapshot))
    error = info.value
    assert (error.position, error.expected, error.recorded) == (
        3,
        "the end of the workflow",
        "snapshot",
    )


def test_the_replayer_refuses_a_compacted_history_and_an_unknown_workflow() -> None:
    events = msgspec.json.decode(as_cli_json(golden()))["events"]
    with pytest.raises(HistoryError, match="--all --json"):
        check_history(events[1:], sync_docs)
    with pytest.raises(HistoryError, match="does not define"):
        check_history(events, CodeApp("docs"))


def test_natsflow_replay_checks_files_and_exits_1_on_nondeterminism(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one.json").write_bytes(as_cli_json(golden()))
    with pytest.raises(SystemExit) as ok:
        main(["replay", str(tmp_path), "--app", "examples.code.sync_docs"])
    assert ok.value.code == 0
    assert capsys.readouterr().out.startswith("ok     ")
    outcomes = check_files([tmp_path], changed(pushes_first))
    assert isinstance(outcomes[0][1], NondeterminismError)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "h.json").write_bytes(as_cli_json(golden()))
    module = tmp_path / "pushes_first_app.py"
    module.write_text(
        "from examples.code.sync_docs import create_sandbox, push, snapshot, sync_sources\n"
        "from tests.unit.test_code_histories import pushes_first\n"
        "NATSFLOW_APP = 'docs'\n"
    )
    monkeypatch.chdir(tmp_path)  # natsflow replay finds the app's module from here
    with pytest.raises(SystemExit) as failed:
        main(["replay", str(bad), "--app", "pushes_first_app"])
    assert failed.value.code == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED "), out
    assert "nondeterminism at decision 1" in out
