"""Manifest loading and validation: every problem reported with its exact path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from natsflow.events.errors import ManifestError
from natsflow.manifests.loader import (
    decode_workflow,
    encode_workflow,
    format_duration,
    load_manifest,
    manifest_version,
    parse_duration,
    parse_manifest,
)
from natsflow.manifests.schema import Workflow

EXAMPLES_DIR = Path(__file__).parents[2] / "manifests" / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def problems_of(doc: Any) -> list[str]:
    """Validate a manifest given as a Python value; return its problems (none: fail)."""
    with pytest.raises(ManifestError) as info:
        parse_manifest(orjson.dumps(doc), "json", "test.json")
    assert info.value.source == "test.json"
    return info.value.problems


def valid(doc: Any) -> Workflow:
    return parse_manifest(orjson.dumps(doc), "json")


def one_step(**step: Any) -> dict[str, Any]:
    return {"name": "wf", "steps": {"only": {"action": "noop", **step}}}


def with_step(action: str, with_: Any) -> dict[str, Any]:
    return {"name": "wf", "steps": {"only": {"action": action, "with": with_}}}


# --- the examples ------------------------------------------------------------


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "hello.yaml",
        "dag.yaml",
        "sync-orchestrator.yaml",
        "entity-sync.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    wf = load_manifest(path)
    assert wf.name == path.stem
    assert decode_workflow(encode_workflow(wf)) == wf


def test_dag_example_shape() -> None:
    wf = load_manifest(EXAMPLES_DIR / "dag.yaml")
    flaky = wf.steps["flaky"]
    assert (flaky.retry.attempts, flaky.retry.backoff) == (3, "exponential")
    assert (flaky.retry.delay, flaky.retry.max_delay) == (0.2, 2.0)
    assert wf.steps["join"].needs == ("left", "right", "flaky")


def test_sync_example_runs_one_child_per_entity_in_dependency_order() -> None:
    wf = load_manifest(EXAMPLES_DIR / "sync-orchestrator.yaml")
    sync = wf.steps["sync"]
    assert sync.action == "workflow"
    assert sync.with_["workflow"] == "entity-sync"
    assert sync.for_each is not None
    assert (sync.for_each.needs, sync.for_each.after) == ("${{ item.needs }}", "${{ item.after }}")
    assert sync.for_each.concurrency == 3
    assert wf.idempotency_key == "${{ input.organisation }}:${{ input.sync_type }}"
    assert wf.steps["report"].needs == ("sync",)


def test_entity_sync_example_pages_with_a_durable_sleep() -> None:
    wf = load_manifest(EXAMPLES_DIR / "entity-sync.yaml")
    page = wf.steps["page"]
    assert page.repeat is not None
    assert page.repeat.sleep == 0.2
    assert page.repeat.until == "${{ not output.has_more }}"


# --- every problem, with its path --------------------------------------------


def test_reports_every_problem_with_exact_paths() -> None:
    doc = {
        "name": "Bad Name",
        "colour": "red",
        "steps": {
            "fetch": {
                "action": "shel",
                "retry": {"attempts": "x", "delay": "soon"},
                "timeout": 0,
                "needs": ["ghost"],
            },
            "b": {"action": "http", "with": {"url": "${{ steps.c.output.url }}"}},
            "c": {"colour": "blue"},
        },
    }
    assert problems_of(doc) == [
        'name: expected str matching ^[a-z0-9][a-z0-9_-]{0,63}$, got "Bad Name"',
        "colour: unknown field (expected one of: name, steps, description, input, output, "
        "triggers, idempotency_key, enabled, retention, actions)",
        'steps.fetch.retry.attempts: expected int >= 1 and <= 1000, got "x"',
        'steps.fetch.retry.delay: invalid duration "soon" (use e.g. 500ms, 2s, 5m, 1h)',
        "steps.fetch.timeout: expected duration > 0, got 0",
        "steps.c.colour: unknown field (expected one of: action, with, needs, after, retry, "
        "timeout, when, for_each, repeat, on_failure, description, heartbeat)",
        "steps.c.action: required field missing",
        'steps.fetch.needs: unknown step "ghost"',
        'steps.fetch.action: unknown action "shel" (expected one of: noop, shell, http, '
        "nats.request, python, sleep, wait, workflow; or a custom action: two or more "
        "dot-separated tokens of lowercase letters, digits and -, each starting with a letter,"
        " at most 64 characters, like billing.charge)",
        'steps.b.with.url: references step "c" which is not in needs/after of "b"',
    ]


def test_top_level_problems() -> None:
    assert problems_of([1, 2]) == ["(top level): expected a mapping (name, steps, ...), got [1,2]"]
    assert problems_of({}) == ["name: required field missing", "steps: required field missing"]
    assert problems_of({"name": "wf", "steps": {}}) == ["steps: at least one step is required"]
    with pytest.raises(ManifestError) as info:
        parse_manifest("", "yaml")
    assert info.value.problems == ["(top level): the document is empty"]


@pytest.mark.parametrize(
    ("fmt", "text", "problem"),
    [
        ("yaml", "name: [", "(top level): invalid YAML at line 1, column 8: "),
        ("json", "{", "(top level): invalid JSON: "),
        ("toml", "name = ", "(top level): invalid TOML: "),
    ],
)
def test_syntax_errors(fmt: Any, text: str, problem: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, fmt, "x")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(problem)


def test_nested_type_errors_name_the_index() -> None:
    doc = one_step(needs=["a", 3], retry={"backoff": "linear", "on": "timeout"})
    doc["steps"]["a"] = {"action": "noop"}
    assert problems_of(doc) == [
        "steps.only.needs[1]: expected str, got 3",
        'steps.only.retry.backoff: expected one of "fixed", "exponential", got "linear"',
        'steps.only.retry.on: expected list of str, got "timeout"',
    ]


# --- the DAG -----------------------------------------------------------------


def test_cycles_are_named() -> None:
    doc = {
        "name": "wf",
        "steps": {
            "a": {"action": "noop", "needs": ["c"]},
            "b": {"action": "noop", "needs": ["a"]},
            "c": {"action": "noop", "after": ["b"]},
            "x": {"action": "noop", "needs": ["y"]},
            "y": {"action": "noop", "needs": ["x", "a"]},
            "ok": {"action": "noop", "needs": ["a", "y"]},
        },
    }
    assert problems_of(doc) == ["steps: cycle a -> c -> b -> a", "steps: cycle x -> y -> x"]


def test_self_dependency() -> None:
    assert problems_of(one_step(needs=["only"], after=["only"])) == [
        "steps.only.needs: a step cannot need itself",
        "steps.only.after: a step cannot come after itself",
    ]


def test_diamond_is_fine_and_deep_chains_do_not_recurse() -> None:
    steps: dict[str, Any] = {
        f"s{i}": {"action": "noop", "needs": [f"s{i - 1}"]} for i in range(1, 3000)
    }
    steps["s0"] = {"action": "noop"}
    steps["end"] = {"action": "noop", "needs": ["s2999", "s1"], "with": {"x": "${{ steps.s0 }}"}}
    assert len(valid({"name": "long", "steps": steps}).steps) == 3001


def test_step_names() -> None:
    doc = {"name": "wf", "steps": {"9lives": {"action": "noop"}, "ok-name_2": {"action": "noop"}}}
    assert problems_of(doc) == [
        'steps.9lives: invalid step name "9lives" (letters, digits, _ and -, '
        "starting with a letter or _, at most 64 characters)"
    ]


# --- templates and references ------------------------------------------------


def test_templates_must_reference_upstream_steps() -> None:
    doc = {
        "name": "wf",
        "steps": {
            "a": {"action": "noop"},
            "b": {"action": "noop", "needs": ["a"]},
            "c": {
                "action": "noop",
                "after": ["b"],
                "with": {"up": "${{ steps.a.output }}", "down": ["${{ steps.d.output }}"]},
                "when": "${{ steps.ghost.status == 'completed' }}",
            },
            "d": {"action": "noop", "needs": ["c"]},
        },
        "output": {"all": "${{ steps.d.output }}", "bad": "${{ steps.nope }}"},
    }
    assert problems_of(doc) == [
        'steps.c.with.down[0]: references step "d" which is not in needs/after of "c"',
        'steps.c.when: references unknown step "ghost"',
        'output.bad: references unknown step "nope"',
    ]


def test_template_syntax_and_scope_names() -> None:
    doc = one_step(
        **{
            "with": {
                "a": "${{ input.x + 1 }}",
                "b": "${{ item.name }}",
                "c": "${{ loop.output }}",
                "d": "${{ inputs.x }}",
                "e": "${{ steps.only.output",
            },
            "when": "input.ok",
        }
    )
    doc["idempotency_key"] = "${{ input.order }}-${{ steps.only.output }}"
    assert problems_of(doc) == [
        "steps.only.with.a: expression 'input.x + 1': operator '+' is not allowed",
        'steps.only.with.b: "item" is not available here '
        "(item is bound in a for_each step's with, key and needs)",
        'steps.only.with.c: "loop" is not available here (loop is bound in a step with repeat)',
        'steps.only.with.d: unknown name "inputs" (expected one of: input, steps, execution, trigger)',
        "steps.only.with.e: expression '${{ steps.only.output': unterminated template: "
        "'${{' without a closing '}}'",
        'steps.only.when: expected a template like "${{ ... }}", got "input.ok"',
        'idempotency_key: "steps" is not available here (no step has run when it is evaluated)',
    ]


def test_for_each_and_repeat() -> None:
    doc = one_step(
        for_each={
            "items": "${{ input.list }}",
            "key": "k-${{ item.id }}",
            "needs": "x ${{ item.d }}",
        },
        repeat={"until": "${{ loop.output.done }}"},
    )
    assert problems_of(doc) == [
        "steps.only: for_each and repeat cannot be combined",
        'steps.only.for_each.key: expected exactly one template like "${{ ... }}", got "k-${{ item.id }}"',
        'steps.only.for_each.needs: expected exactly one template like "${{ ... }}", got "x ${{ item.d }}"',
    ]
    fan_out = valid(
        one_step(
            for_each={"items": "${{ input.list }}", "key": "${{ item.id }}"},
            when="${{ input.on }}",
        )
    )
    assert fan_out.steps["only"].for_each is not None
    # `when` decides whether the fan-out happens at all: there is no `item` yet.
    assert problems_of(
        one_step(for_each={"items": "${{ input.list }}"}, when="${{ item.on }}")
    ) == [
        'steps.only.when: "item" is not available here (item is bound in a for_each step\'s with, key and needs)'
    ]
    loop = valid(one_step(repeat={"until": "${{ loop.output.done }}", "sleep": "2s"}))
    assert loop.steps["only"].repeat is not None
    assert loop.steps["only"].repeat.sleep == 2.0


# --- actions and their ``with`` ----------------------------------------------


def test_action_with_checks() -> None:
    doc = {
        "name": "wf",
        "steps": {
            "sh": {"action": "shell", "with": {"argv": "echo hi", "env": {"A": 1}, "colour": 1}},
            "sh2": {"action": "shell", "with": {"argv": ["sleep", 0.3]}},
            "web": {
                "action": "http",
                "with": {"method": "fetch", "expect_status": [200, 999], "json": {}, "body": "x"},
            },
            "ask": {"action": "nats.request", "with": {"subject": 5}},
            "py": {"action": "python", "with": {"args": []}},
            "nap": {"action": "sleep", "with": {"duration": "soon"}},
            "nap2": {"action": "sleep"},
        },
    }
    assert problems_of(doc) == [
        'steps.sh.with.argv: expected non-empty list of str, got "echo hi" '
        '(arguments, never a shell string: e.g. ["echo", "hi"])',
        "steps.sh.with.env.A: expected str, got 1 (quote it)",
        "steps.sh.with.colour: unknown field (expected one of: argv, env, cwd, stdin)",
        "steps.sh2.with.argv[1]: expected str, got 0.3 (quote it)",
        "steps.web.with.method: expected str matching ^(?i:GET|POST|PUT|PATCH|DELETE|HEAD)$, "
        'got "fetch" (one of GET, POST, PUT, PATCH, DELETE, HEAD, in any case)',
        "steps.web.with.expect_status[1]: expected int >= 100 and <= 599, got 999",
        "steps.web.with.url: required field missing",
        "steps.web.with: use json or body, not both",
        "steps.ask.with.subject: expected non-empty str, got 5",
        "steps.py.with.args: expected mapping, got []",
        "steps.py.with.function: required field missing",
        'steps.nap.with.duration: invalid duration "soon" (use e.g. 500ms, 2s, 5m, 1h)',
        "steps.nap2.with.duration: required field missing",
    ]


@pytest.mark.parametrize(
    ("action", "with_", "problem"),
    [
        # Each once deployed fine and failed at run time.
        ("shell", {"argv": ["cat"], "stdin": {"a": 1}}, 'with.stdin: expected str, got {"a":1}'),
        (
            "nats.request",
            {"subject": "x", "timeout": 0},
            "with.timeout: expected duration > 0, got 0",
        ),
        (
            "nats.request",
            {"subject": "x", "timeout": "0s"},
            'with.timeout: expected duration > 0, got "0s"',
        ),
        ("http", {"url": "http://x", "timeout": 0}, "with.timeout: expected duration > 0, got 0"),
        ("python", {"function": ""}, 'with.function: expected non-empty str, got ""'),
        ("shell", {"argv": ["x"], "cwd": ""}, 'with.cwd: expected non-empty str, got ""'),
    ],
)
def test_run_time_failures_are_deploy_time_errors(
    action: str, with_: dict[str, Any], problem: str
) -> None:
    assert problems_of(with_step(action, with_)) == [f"steps.only.{problem}"]


@pytest.mark.parametrize("method", ["get", "GET", "Post", "delete", "${{ input.method }}"])
def test_http_method_in_any_case_deploys(method: str) -> None:
    wf = valid(with_step("http", {"url": "http://x", "method": method}))
    assert wf.steps["only"].with_["method"] == method


def test_action_durations_become_seconds() -> None:
    doc = {
        "name": "wf",
        "steps": {
            "ask": {"action": "nats.request", "with": {"subject": "s", "timeout": "500ms"}},
            "web": {"action": "http", "with": {"url": "u", "timeout": "1m"}},
        },
    }
    wf = valid(doc)
    assert wf.steps["ask"].with_ == {"subject": "s", "timeout": 0.5}
    assert wf.steps["web"].with_ == {"url": "u", "timeout": 60.0}


def test_whole_templates_are_checked_at_run_time() -> None:
    wf = valid(
        {
            "name": "wf",
            "steps": {
                "sh": {
                    "action": "shell",
                    "with": {"argv": "${{ input.argv }}", "env": "${{ input.env }}"},
                },
                "nap": {"action": "sleep", "with": {"duration": "${{ input.wait }}"}},
                "nap2": {"action": "sleep", "with": {"duration": "1m30s"}},
                "any": {"action": "noop", "with": {"whatever": [1, {"x": None}]}},
            },
        }
    )
    assert wf.steps["nap"].with_ == {"duration": "${{ input.wait }}"}
    assert wf.steps["nap2"].with_ == {"duration": 90.0}


def test_triggers() -> None:
    doc = one_step()
    doc["triggers"] = [
        {"subject": "orders.created", "cron": "* * * * *"},
        {},
        {"subject": "a b.>"},
        {"subject": "natsflow.tasks"},
        {"subject": "orders.>"},
        {"cron": "*/5 * * * *"},
    ]
    assert problems_of(doc) == [
        "triggers[0]: set exactly one of subject, cron or every",
        "triggers[1]: set exactly one of subject, cron or every",
        'triggers[2].subject: invalid NATS subject "a b.>"',
        "triggers[3].subject: subjects under natsflow. are reserved",
    ]


def test_retry_max_delay_below_delay() -> None:
    assert problems_of(one_step(retry={"delay": "5s", "max_delay": "1s"})) == [
        "steps.only.retry.max_delay: must be >= delay (1.0 < 5.0)"
    ]
    assert problems_of(one_step(retry={"max_delay": "500ms"})) == [
        "steps.only.retry.max_delay: must be >= delay (0.5 < 1.0)"
    ]


# --- durations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("1h30m", 5400.0), ("30", 30.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "", "-1s", "1x", "s", "inf", "1e400s", True, -1, math.inf])
def test_parse_duration_refuses(bad: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_duration_fields_become_seconds() -> None:
    wf = valid(one_step(timeout="1h30m", retry={"delay": "250ms", "max_delay": 60}))
    step = wf.steps["only"]
    assert (step.timeout, step.retry.delay, step.retry.max_delay) == (5400.0, 0.25, 60.0)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False) | st.integers(0, 10**12))
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- files, formats, versions ------------------------------------------------

HELLO_YAML = """
name: hello
steps:
  greet:
    action: shell
    with:
      argv: [echo, "${{ input.name }}"]
    retry: {attempts: 2, delay: 500ms}
output: "${{ steps.greet.output }}"
"""
HELLO_JSON = {
    "output": "${{ steps.greet.output }}",
    "steps": {
        "greet": {
            "retry": {"delay": 0.5, "attempts": 2},
            "with": {"argv": ["echo", "${{ input.name }}"]},
            "action": "shell",
        }
    },
    "name": "hello",
}
HELLO_TOML = """
name = "hello"
output = "${{ steps.greet.output }}"
[steps.greet]
action = "shell"
with = { argv = ["echo", "${{ input.name }}"] }
retry = { attempts = 2, delay = "500ms" }
"""


def test_version_is_the_same_in_every_format(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(HELLO_YAML)
    (tmp_path / "a.json").write_bytes(orjson.dumps(HELLO_JSON))
    (tmp_path / "a.toml").write_text(HELLO_TOML)
    versions = {
        manifest_version(load_manifest(tmp_path / f"a.{e}")) for e in ("yml", "json", "toml")
    }
    assert len(versions) == 1
    (version,) = versions
    assert len(version) == 12
    assert int(version, 16) >= 0


def test_version_changes_with_content() -> None:
    base = manifest_version(parse_manifest(HELLO_YAML, "yaml"))
    changed = parse_manifest(HELLO_YAML.replace("attempts: 2", "attempts: 3"), "yaml")
    assert manifest_version(changed) != base
    assert manifest_version(decode_workflow(encode_workflow(changed))) == manifest_version(changed)


def test_yaml_extras_become_json_values() -> None:
    wf = parse_manifest(
        "name: d\nsteps: {a: {action: noop, with: {day: 2024-01-02, 200: ok}}}", "yaml"
    )
    assert wf.steps["a"].with_ == {"day": "2024-01-02", "200": "ok"}


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "flow.txt"
    path.write_text(yaml.safe_dump(HELLO_JSON))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.problems == [
        "(file): unknown extension '.txt' (expected one of: .yaml, .yml, .toml, .json)"
    ]
