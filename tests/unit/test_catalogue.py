"""The action catalogue: one declaration per action, the same answer at deploy and run time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import natsflow.actors.actions.base
from natsflow.actors.actions import builtin_registry
from natsflow.actors.actions._context import convert_params
from natsflow.actors.jetstream.topology import task_subject, worker_task_subjects
from natsflow.events.errors import ManifestError, TerminalStepError
from natsflow.events.messages import Start
from natsflow.events.model import AnyEvent, ExecutionState, StepAttemptFailed, TimerStarted
from natsflow.manifests.actions import (
    ACTIONS,
    SLEEP,
    ActionSpec,
    HttpParams,
    ParamsError,
    fields_of,
    runs_in_engine,
    worker_actions,
)
from natsflow.manifests.decider import ManifestDecider
from natsflow.manifests.expressions import is_template
from natsflow.manifests.loader import parse_manifest
from natsflow.manifests.schema import Workflow
from tests.unit.strategies import json_values

README = Path(__file__).parents[2] / "README.md"
WITH_PARAMS = [name for name, action in ACTIONS.items() if action.params is not None]


def deploy(action: str, with_: Any) -> Workflow:
    doc = {"name": "wf", "steps": {"only": {"action": action, "with": with_}}}
    return parse_manifest(orjson.dumps(doc), "json", "test.json")


# --- where each action runs ----------------------------------------------------------


def test_the_built_in_actions() -> None:
    assert list(ACTIONS) == [
        "noop",
        "shell",
        "http",
        "nats.request",
        "python",
        "sleep",
        "wait",
        "workflow",
    ]
    assert worker_actions() == ("noop", "shell", "http", "nats.request", "python")
    assert [name for name in ACTIONS if runs_in_engine(name)] == ["sleep", "wait", "workflow"]
    assert not runs_in_engine("teleport")


def test_every_worker_action_has_code_and_nothing_else_does() -> None:
    assert builtin_registry().actions() == tuple(sorted(worker_actions()))


def test_a_catalogue_entry_without_code_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with_wait = (*worker_actions(), "wait")
    monkeypatch.setattr(natsflow.actors.actions.base, "worker_actions", lambda: with_wait)
    with pytest.raises(RuntimeError, match="do not match the catalogue's worker actions"):
        builtin_registry()


def test_code_without_a_catalogue_entry_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    without_http = tuple(a for a in worker_actions() if a != "http")
    monkeypatch.setattr(natsflow.actors.actions.base, "worker_actions", lambda: without_http)
    with pytest.raises(RuntimeError, match="do not match the catalogue's worker actions"):
        builtin_registry()


def test_workers_consume_exactly_the_worker_actions() -> None:
    consumed = worker_task_subjects()
    assert len(consumed) == len(set(consumed))
    assert set(consumed) == {task_subject(a) for a in builtin_registry().actions()}
    assert set(consumed) == {task_subject(n) for n, a in ACTIONS.items() if a.runs == "worker"}
    assert task_subject(SLEEP.name) not in consumed


# --- the README documents the structs ------------------------------------------------


def test_readme_lists_every_action_and_its_with_keys() -> None:
    text = README.read_text()
    start = text.index("### Built-in actions")
    section = text[start : text.index("\n**", start)]  # the table, up to the first detail
    rows = dict(re.findall(r"^\| `([a-z.]+)` \| (.*)$", section, re.MULTILINE))
    assert list(rows) == list(ACTIONS)
    for name, action in ACTIONS.items():
        keys_column = rows[name].split(" | ")[0]
        documented = re.findall(r"^`(\w+)`|, `(\w+)`|\*\*or\*\* `(\w+)`", keys_column)
        assert [next(k for k in m if k) for m in documented] == list(fields_of(action)), name
        for field in msgspec.structs.fields(action.params) if action.params else ():
            if field.required:
                assert f"`{field.encode_name}` (required" in keys_column, (name, field.name)


# --- templates at deploy, values at run time -----------------------------------------


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_a_whole_template_stands_for_any_field_at_deploy(name: str) -> None:
    action = ACTIONS[name]
    assert action.params is not None
    with_ = dict.fromkeys(fields_of(action), "${{ input.x }}")
    with_.pop("body", None)  # json or body, not both: a rule on keys, templates or not
    if name == "wait":
        with_.pop("subject")  # signal or subject, not both: a rule on keys as well
    assert deploy(name, with_).steps["only"].with_ == with_
    with pytest.raises(ParamsError):  # rendered, a template is just a string
        action.convert(with_)


def test_nested_templates_are_deferred_too() -> None:
    with_ = {"url": "u", "expect_status": [200, "${{ input.code }}"], "headers": {"X": "a"}}
    assert deploy("http", with_).steps["only"].with_ == with_


def test_cross_field_rules_apply_at_both_ends() -> None:
    with_ = {"url": "${{ input.url }}", "json": "${{ input.doc }}", "body": "${{ input.text }}"}
    with pytest.raises(ManifestError) as info:
        deploy("http", with_)
    assert info.value.problems == ["steps.only.with: use json or body, not both"]
    with pytest.raises(ParamsError, match="with: use json or body, not both"):
        ACTIONS["http"].convert({"url": "u", "json": None, "body": "x"})


def test_method_is_upper_case_at_run_time() -> None:
    assert ACTIONS["http"].convert({"url": "u", "method": "delete"}).method == "DELETE"
    assert HttpParams(url="u", method="get").method == "GET"


def test_sleep_duration_is_seconds() -> None:
    assert SLEEP.convert({"duration": "1m30s"}).duration == 90.0
    assert SLEEP.convert({"duration": 2}).duration == 2.0
    with pytest.raises(ParamsError, match=r'sleep: with\.duration: invalid duration "soon"'):
        SLEEP.convert({"duration": "soon"})
    with pytest.raises(ParamsError, match=r"sleep: with: expected a mapping, got \[\]"):
        SLEEP.convert([])


# --- one source of truth: deploy accepts exactly what run time accepts ---------------

_candidates = st.one_of(
    json_values,
    st.sampled_from(["", "x", "500ms", "2s", "1m30s", "0s", "soon", "-1", "get", "POST", "fetch"]),
    st.sampled_from([0, -1, 0.25, 30, 200, 999, True, None]),
    st.lists(st.sampled_from(["echo", "hi", 1, 204, 600]), max_size=3),
    st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["1", 1, None]), max_size=2),
)


# A valid value for each field of each params struct, to mix with anything at all.
_VALID: dict[str, st.SearchStrategy[Any]] = {
    "argv": st.lists(st.text(max_size=4), min_size=1, max_size=3),
    "env": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    "cwd": st.sampled_from(["/tmp", "."]),
    "stdin": st.none() | st.text(max_size=4),
    "url": st.sampled_from(["http://127.0.0.1:1/", "x"]),
    "method": st.sampled_from(["GET", "get", "Patch", "delete", "head"]) | st.none(),
    "headers": st.dictionaries(st.sampled_from(["X", "Y"]), st.text(max_size=3), max_size=2),
    "json": json_values,
    "body": st.none() | st.text(max_size=4),
    "expect_status": st.none() | st.lists(st.integers(100, 599), max_size=3),
    "timeout": st.sampled_from(["2s", "500ms", "1h30m", 0.25, 30]),
    "subject": st.sampled_from(["svc.echo", "a"]),
    "data": json_values,
    "function": st.sampled_from(["f", "charge"]),
    "args": st.dictionaries(st.text(max_size=3), json_values, max_size=2),
    "duration": st.sampled_from(["0s", "1m30s", "250ms", 0, 2.5, "3"]),
    "signal": st.sampled_from(["approve", "go-ahead"]),
    "on_timeout": st.sampled_from(["fail", "continue"]),
    "default": json_values,
    "workflow": st.sampled_from(["entity-sync", "a", "x_1"]),
    "input": json_values,
}


@st.composite
def withs(draw: st.DrawFn, action: ActionSpec[Any]) -> dict[str, Any]:
    """Mostly valid ``with`` mappings, each field now and then absent, wrong or unknown."""
    out: dict[str, Any] = {}
    for field in fields_of(action):
        match draw(st.sampled_from(["valid"] * 5 + ["absent"] * 3 + ["any"])):
            case "valid":
                out[field] = draw(_VALID[field])
            case "any":
                out[field] = draw(_candidates)
    if "json" in out and "body" in out and draw(st.sampled_from([True] * 3 + [False])):
        del out[draw(st.sampled_from(["json", "body"]))]  # mostly keep to the rule
    if "signal" in out and "subject" in out and draw(st.sampled_from([True] * 3 + [False])):
        del out[draw(st.sampled_from(["signal", "subject"]))]  # wait: one of them
    if draw(st.sampled_from(range(10))) == 0:
        out["colour"] = draw(_candidates)
    return out


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


@pytest.mark.parametrize("name", WITH_PARAMS)
@given(data=st.data())
def test_deploy_accepts_exactly_what_run_time_accepts(name: str, data: st.DataObject) -> None:
    action = ACTIONS[name]
    with_ = data.draw(withs(action))
    assume(not _has_template(with_))
    try:
        stored = deploy(name, with_).steps["only"].with_
        at_deploy: list[str] = []
    except ManifestError as e:
        at_deploy = [p.removeprefix("steps.only.") for p in e.problems]
    try:
        params = action.convert(with_)
        at_run: list[str] = []
    except ParamsError as e:
        at_run = e.problems
    # Run time ignores a key it does not know (a task rendered by newer code);
    # deploy refuses it. Every other problem is the same at both ends.
    unknown = [p for p in at_deploy if p.startswith("with.colour: unknown field")]
    assert len(unknown) == ("colour" in with_)
    assert [p for p in at_deploy if p not in unknown] == list(dict.fromkeys(at_run))
    if at_run:
        if action.runs == "worker":  # what a worker reports: the same problems
            with pytest.raises(TerminalStepError) as info:
                convert_params(action, with_)
            assert info.value.kind == "bad_params"
            assert info.value.message == f"{name}: " + "; ".join(at_run)
    elif not unknown:
        # What the definition stores (durations in seconds) means the same.
        assert action.convert(stored) == params


# --- the engine's own actions ---------------------------------------------------------

SLEEPER = 'name: wf\nsteps:\n  nap: {action: sleep, with: {duration: "${{ input.wait }}"}}\n'


@pytest.mark.parametrize(("wait", "due"), [("1m30s", 90.0), (2, 2.0), ("250ms", 0.25)])
def test_the_decider_converts_a_sleep_with_the_catalogue(wait: Any, due: float) -> None:
    events = _start(SLEEPER, {"wait": wait})
    assert [(type(e), getattr(e, "due", None)) for e in events[1:]] == [(TimerStarted, 100 + due)]


@pytest.mark.parametrize(
    ("wait", "error"),
    [
        ("soon", 'sleep: with.duration: invalid duration "soon" (use e.g. 500ms, 2s, 5m, 1h)'),
        (-1, "sleep: with.duration: expected duration >= 0, got -1"),
        ({"s": 1}, 'sleep: with.duration: expected duration >= 0, got {"s":1}'),
    ],
)
def test_a_bad_rendered_duration_fails_the_step(wait: Any, error: str) -> None:
    failed = _start(SLEEPER, {"wait": wait})[1]
    assert isinstance(failed, StepAttemptFailed)
    assert (failed.step, failed.kind, failed.error) == ("nap", "bad_params", error)


def _start(manifest: str, input_: Any) -> tuple[AnyEvent, ...]:
    wf = parse_manifest(manifest, "yaml")
    start = Start(workflow="wf", version="v1", input=input_)
    return ManifestDecider(wf).react(ExecutionState(execution_id="wf-1"), start, 100.0).events
