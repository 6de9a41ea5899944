"""The ``${{ ... }}`` expression language: evaluation, rendering, refusals, static checks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsflow.events.errors import ExpressionError
from natsflow.manifests.expressions import (
    evaluate,
    is_template,
    parse_check,
    referenced_names,
    referenced_steps,
    render,
    single_template,
    template_expressions,
)

SCOPE: dict[str, Any] = {
    "input": {
        "name": "Ada",
        "dry_run": False,
        "items": [{"id": 7}, {"id": 8}],
        "key-with-dash": "dashed",
        "n": 3,
    },
    "steps": {
        "load": {"output": {"items": [1, 2, 3], "count": 5}, "status": "completed"},
        "empty": {"output": None, "status": "skipped"},
    },
    "item": {"name": "users", "depends_on": ["teams"]},
    "loop": {"output": {"has_more": False}, "iteration": 2},
    "execution": {"id": "ex-1", "workflow": "hello"},
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("steps.load.output.items", [1, 2, 3]),
        ("input.name", "Ada"),
        ("item.depends_on", ["teams"]),
        ("loop.output.has_more == false", True),
        ("steps.load.output.count > 3 and not input.dry_run", True),
        ("input.items[0].id", 7),
        ("input.items[-1].id", 8),
        ('input["key-with-dash"]', "dashed"),
        ('steps["load"].status', "completed"),
        ("len(steps.load.output.items)", 3),
        ("len(input.name) == 3", True),
        ("'teams' in item.depends_on", True),
        ("'x' not in item.depends_on", True),
        ("1 < input.n <= 3", True),
        ("input.n != 3 or input.name", "Ada"),
        ("steps.empty.output == null", True),
        ("True and not None", True),
        ("-input.n", -3),
        ("[1, 'a', null, true]", [1, "a", None, True]),
        ("(1, 2)", [1, 2]),
        ('{"a": input.n, "b": [loop.iteration]}', {"a": 3, "b": [2]}),
        ("  execution.id  ", "ex-1"),
        ("3.5", 3.5),
    ],
)
def test_evaluate(expr: str, expected: Any) -> None:
    assert evaluate(expr, SCOPE) == expected


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("foo()", "function calls are not allowed (only len(x))"),
        ("len(1, 2)", "function calls are not allowed (only len(x))"),
        ("input.name.upper()", "function calls are not allowed (only len(x))"),
        ("lambda: 1", "lambda is not allowed"),
        ("[x for x in input.items]", "comprehension is not allowed"),
        ("{k: 1 for k in input}", "comprehension is not allowed"),
        ("input.__class__", "dunder attribute '__class__' is not allowed"),
        ("__import__", "dunder name '__import__' is not allowed"),
        ("input.n + 1", "operator '+' is not allowed"),
        ("~input.n", "operator '~' is not allowed"),
        ("input.n is None", "operator 'is' is not allowed"),
        ("1 if input.n else 2", "conditional expression (x if c else y) is not allowed"),
        ("input.items[0:1]", "slice is not allowed"),
        ("{1, 2}", "set literal is not allowed"),
        ("(x := 1)", "assignment expression (:=) is not allowed"),
        ("f'{input.name}'", "f-string is not allowed"),
        ("b'x'", "literal of type bytes is not allowed"),
        ("{**input}", "unpacking (**) is not allowed"),
        ("", "empty expression"),
        ("input.", "invalid syntax: invalid syntax"),
    ],
)
def test_whitelist_refuses(expr: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(expr, SCOPE)
    assert info.value.reason == reason
    assert info.value.expression == expr


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("input.missing", "input has no key 'missing'"),
        ("steps.load.output.nope", "steps.load.output has no key 'nope'"),
        ("steps.empty.output.x", "steps.empty.output is null, so it has no key 'x'"),
        ("input.name.first", "input.name is str, so it has no key 'first'"),
        ("input.items[5]", "input.items has no index 5 (length 2)"),
        ("input.items['a']", "input.items is a list: index it with an int, not 'a'"),
        ("input[0]", "input is a mapping: its keys are strings, not int"),
        ("nope", "unknown name 'nope' (available: execution, input, item, loop, steps)"),
        ("input.n < 'a'", "cannot compare int < str"),
        ("-input.name", "cannot negate str"),
        ("len(input.n)", "len() of int"),
        ("{[1]: 2}", "a list cannot be a dict key"),
    ],
)
def test_evaluation_errors_name_the_path(expr: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(expr, SCOPE)
    assert info.value.reason == reason


def test_literals_win_over_scope_names() -> None:
    assert evaluate("true", {"true": 0}) is True
    assert evaluate("null", {}) is None


def test_render_keeps_type_of_a_whole_template() -> None:
    assert render("${{ steps.load.output.items }}", SCOPE) == [1, 2, 3]
    assert render("${{steps.load.output.count}}", SCOPE) == 5
    assert render("${{ input.dry_run }}", SCOPE) is False
    assert render("${{ item }}", SCOPE) == {"name": "users", "depends_on": ["teams"]}


def test_render_interpolates_text() -> None:
    assert render("Hello, ${{ input.name }}!", SCOPE) == "Hello, Ada!"
    assert render("n=${{ input.n }} items=${{ steps.load.output.items }}", SCOPE) == (
        "n=3 items=[1,2,3]"
    )
    assert render("${{ input.name }}${{ input.name }}", SCOPE) == "AdaAda"
    assert render("${{ steps.empty.output }}-${{ input.dry_run }}", SCOPE) == "null-false"
    assert render(" ${{ input.n }}", SCOPE) == " 3"


def test_render_walks_containers_but_not_keys() -> None:
    value = {
        "${{ input.name }}": ["${{ input.n }}", ("${{ item.name }}", 1), None],
        "nested": {"text": "x ${{ execution.workflow }}"},
    }
    assert render(value, SCOPE) == {
        "${{ input.name }}": [3, ("users", 1), None],
        "nested": {"text": "x hello"},
    }


def test_render_reports_bad_templates() -> None:
    with pytest.raises(ExpressionError, match="has no key 'nope'"):
        render({"a": ["${{ input.nope }}"]}, SCOPE)
    with pytest.raises(ExpressionError, match="unterminated template"):
        render("echo ${{ input.name", SCOPE)


def test_template_helpers() -> None:
    assert is_template("a ${{ b }}")
    assert not is_template("a {{ b }}")
    assert single_template("${{ input.name }}") == "input.name"
    assert single_template("${{ a }} ${{ b }}") is None
    assert single_template("x${{ a }}") is None
    assert template_expressions("a ${{ x }} b ${{y}}") == ["x", "y"]


def test_parse_check_collects_every_problem() -> None:
    value = {
        "ok": "${{ input.name }}",
        "list": ["${{ a( }}", "plain", {"deep": "${{ 1 + 1 }}"}],
        "open": "x ${{ a",
        "number": 3,
    }
    assert parse_check(value) == [
        "expression 'a(': invalid syntax: '(' was never closed",
        "expression '1 + 1': operator '+' is not allowed",
        "expression 'x ${{ a': unterminated template: '${{' without a closing '}}'",
    ]
    assert parse_check({"fine": ["${{ steps.a.output }}", "text"]}) == []


def test_referenced_steps_and_names() -> None:
    value = {
        "a": "${{ steps.load.output.items }} and ${{ steps['other'].status }}",
        "b": ["${{ len(steps.third.output) > input.n and true }}"],
        "c": "${{ broken( }}",
        "d": "steps.not_a_template",
    }
    assert referenced_steps(value) == {"load", "other", "third"}
    assert referenced_names(value) == {"steps", "input"}
    assert referenced_names("${{ item.name == loop.output }}") == {"item", "loop"}


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
template_free = st.recursive(
    json_leaves.filter(lambda v: not (isinstance(v, str) and "${{" in v)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)


@given(template_free)
def test_render_is_identity_without_templates(value: Any) -> None:
    assert render(value, SCOPE) == value


@given(json_values)
def test_whole_template_keeps_any_value(value: Any) -> None:
    assert render("${{ input.v }}", {"input": {"v": value}}) == value


@given(json_values)
def test_interpolation_writes_json_for_non_strings(value: Any) -> None:
    text = render("<${{ input.v }}>", {"input": {"v": value}})
    inner = value if isinstance(value, str) else orjson.dumps(value).decode()
    assert text == f"<{inner}>"
