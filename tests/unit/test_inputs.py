"""A manifest's ``input`` JSON Schema: checked at deploy, every start's input checked by path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsflow.actors.jetstream.definitions import decode_deployed
from natsflow.events.errors import InvalidInput, ManifestError
from natsflow.manifests.inputs import MAX_PROBLEMS, InputSchema, check_input_schema, render_path
from natsflow.manifests.loader import (
    decode_workflow,
    encode_workflow,
    load_manifest,
    manifest_version,
    parse_manifest,
)
from natsflow.manifests.schema import StoredDefinition, Workflow
from natsflow.service.outcomes import error_of, outcome

EXAMPLES = Path(__file__).parents[2] / "manifests" / "examples"

ORDER = {
    "type": "object",
    "required": ["amount", "currency"],
    "properties": {
        "amount": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD"]},
        "email": {"type": "string", "format": "email"},
        "day": {"type": "string", "format": "date"},
        "id": {"type": "string", "format": "uuid"},
        "lines": {
            "type": "array",
            "items": {"type": "object", "required": ["sku"], "properties": {"sku": {}}},
        },
    },
    "additionalProperties": False,
}


def manifest(schema: Any) -> dict[str, Any]:
    return {"name": "orders", "input": schema, "steps": {"a": {"action": "noop"}}}


def deploy_problems(schema: Any) -> list[str]:
    """Validate a manifest with ``input: schema``; its problems (none: fail)."""
    with pytest.raises(ManifestError) as info:
        parse_manifest(orjson.dumps(manifest(schema)), "json", "orders.json")
    return info.value.problems


# --- at deploy: the schema itself --------------------------------------------


def test_a_valid_schema_deploys_and_round_trips() -> None:
    wf = parse_manifest(orjson.dumps(manifest(ORDER)), "json")
    assert wf.input == ORDER
    assert decode_workflow(encode_workflow(wf)) == wf
    assert manifest_version(decode_workflow(encode_workflow(wf))) == manifest_version(wf)


def test_no_input_schema_is_none() -> None:
    wf = parse_manifest("name: x\nsteps: {a: {action: noop}}", "yaml")
    assert wf.input is None


def test_an_invalid_schema_names_the_path_of_each_problem() -> None:
    schema = {
        "type": "object",
        "required": "amount",
        "properties": {"amount": {"type": "nmber"}, "code": {"pattern": "("}},
    }
    assert deploy_problems(schema) == [
        "input.properties.amount.type: 'nmber' is not valid under any of the given schemas",
        "input.properties.code.pattern: '(' is not a 'regex'",
        "input.required: 'amount' is not of type 'array'",
    ]


def test_schema_problems_come_with_the_manifests_other_problems() -> None:
    doc = manifest({"minimum": "zero"})
    doc["steps"]["a"]["action"] = "teleport"
    with pytest.raises(ManifestError) as info:
        parse_manifest(orjson.dumps(doc), "json")
    assert any(p.startswith("steps.a.action: unknown action") for p in info.value.problems)
    assert "input.minimum: 'zero' is not of type 'number'" in info.value.problems


@pytest.mark.parametrize("schema", [5, "object", ["a"], True])
def test_input_must_be_a_schema_object(schema: Any) -> None:
    (problem,) = deploy_problems(schema)
    assert problem.startswith("input: expected mapping, got ")
    assert problem.endswith(" (a JSON Schema object)")


def test_the_dialect_is_the_one_schema_names() -> None:
    # Draft 4's exclusiveMaximum is a boolean, 2020-12's a number: each checked by its own.
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMaximum": True}
    assert check_input_schema(draft4) == ["input: 'maximum' is a dependency of 'exclusiveMaximum'"]
    draft4["maximum"] = 10
    assert check_input_schema(draft4) == []
    assert check_input_schema({"exclusiveMaximum": True}) == [
        "input.exclusiveMaximum: True is not of type 'number'"
    ]
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema", "definitions": {}}
    assert check_input_schema(draft7) == []


def test_an_unknown_dialect_is_refused() -> None:
    (problem,) = deploy_problems({"$schema": "https://example.com/my-dialect"})
    assert problem.startswith(
        "input.$schema: unknown dialect 'https://example.com/my-dialect' (expected one of: "
    )
    assert "https://json-schema.org/draft/2020-12/schema" in problem


def test_local_references_resolve_and_others_are_refused() -> None:
    schema = {
        "$defs": {"money": {"$anchor": "money", "type": "number"}},
        "properties": {
            "a": {"$ref": "#/$defs/money"},
            "b": {"$ref": "#money"},
            "c": {"$ref": "#/$defs/nothing"},
            "d": {"$ref": "https://example.com/money.json"},
            "e": {"$ref": "money.json#/x"},
            # data, not a reference: left alone
            "f": {"const": {"$ref": "https://example.com/x"}},
        },
    }
    assert deploy_problems(schema) == [
        "input.properties.c.$ref: reference '#/$defs/nothing' points to nothing in the schema",
        "input.properties.d.$ref: reference 'https://example.com/money.json' leaves the schema"
        " (only local references like '#/$defs/name' are allowed: natsflow fetches nothing)",
        "input.properties.e.$ref: reference 'money.json#/x' leaves the schema"
        " (only local references like '#/$defs/name' are allowed: natsflow fetches nothing)",
    ]


def test_a_ref_under_a_nested_id_that_resolves_to_nothing_is_an_input_problem() -> None:
    # Under a nested $id, '#/...' is relative to that subschema: not checked at deploy,
    # and when it resolves to nothing the start is refused, never fetched nor crashed.
    schema = {"properties": {"a": {"$id": "https://example.com/a", "$ref": "#/nowhere"}}}
    assert check_input_schema(schema) == []
    (problem,) = InputSchema(schema).problems({"a": 1})
    assert problem.startswith("input: the input schema has a reference that cannot be resolved")


# --- at start: the input -----------------------------------------------------


def test_every_problem_is_listed_sorted_by_path() -> None:
    bad = {
        "amount": "abc",
        "email": "nobody",
        "day": "2024-13-01",
        "id": "not-a-uuid",
        "lines": [{"sku": 1}, {}, {"sku": 2}, *[{}] * 8],
        "colour": "red",
    }
    assert InputSchema(ORDER).problems(bad) == [
        "input: 'currency' is a required property",
        "input: Additional properties are not allowed ('colour' was unexpected)",
        "input.amount: 'abc' is not of type 'number'",
        "input.day: '2024-13-01' is not a 'date'",
        "input.email: 'nobody' is not a 'email'",
        "input.id: 'not-a-uuid' is not a 'uuid'",
        *[f"input.lines[{i}]: 'sku' is a required property" for i in (1, *range(3, 11))],
    ]


def test_a_valid_input_has_no_problem() -> None:
    good = {
        "amount": 12.5,
        "currency": "EUR",
        "email": "ada@example.com",
        "day": "2024-02-29",
        "id": "6f1c7d1e-2a7b-4c7e-9d2e-0b1f7d9a0c11",
        "lines": [{"sku": "a"}],
    }
    assert InputSchema(ORDER).problems(good) == []


def test_a_missing_input_is_null() -> None:
    assert InputSchema(ORDER).problems(None) == ["input: None is not of type 'object'"]


def test_odd_keys_are_quoted_in_paths() -> None:
    schema = {"properties": {"a.b": {"type": "integer"}, 'say "hi"': {"type": "integer"}}}
    assert InputSchema(schema).problems({"a.b": "x", 'say "hi"': "y"}) == [
        "input[\"a.b\"]: 'x' is not of type 'integer'",
        "input[\"say \\\"hi\\\"\"]: 'y' is not of type 'integer'",
    ]
    assert render_path("input", ["lines", 2, "sku", "$x"]) == "input.lines[2].sku.$x"


def test_a_huge_value_is_cut_and_many_problems_are_counted() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    problems = InputSchema(schema).problems(["x" * 1000] * (MAX_PROBLEMS + 7))
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0].startswith("input[0]: 'xxx")
    assert problems[0].endswith("...")
    assert all(len(p) < 300 for p in problems)
    assert problems[-1] == "input: ... and 7 more problem(s)"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
COUNT = {
    "type": "object",
    "required": ["n"],
    "properties": {
        "n": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


@given(JSON)
def test_the_empty_schema_accepts_any_json(value: Any) -> None:
    assert InputSchema({}).problems(value) == []


@given(JSON)
def test_problems_are_sorted_paths_under_input(value: Any) -> None:
    problems = InputSchema(COUNT).problems(value)
    assert all(p.startswith("input") for p in problems)
    assert problems == InputSchema(COUNT).problems(value)  # deterministic
    ok = (
        isinstance(value, dict)
        and type(value.get("n")) is int
        and (
            "tags" not in value
            or (isinstance(value["tags"], list) and all(isinstance(t, str) for t in value["tags"]))
        )
    )
    # n may also be a float with an integral value (JSON Schema's integer)
    if isinstance(value, dict) and isinstance(value.get("n"), float) and value["n"].is_integer():
        return
    assert (problems == []) == ok, problems


@given(st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=30))
def test_index_paths_sort_as_numbers(items: list[Any]) -> None:
    problems = InputSchema({"items": {"type": "integer"}}).problems(items)
    indices = [int(p.split("]")[0].removeprefix("input[")) for p in problems]
    assert indices == [i for i, item in enumerate(items) if not isinstance(item, int)]


# --- errors and stored definitions -------------------------------------------


def test_invalid_input_is_a_400_listing_problems_and_comes_back_to_the_client() -> None:
    problems = ["input: 'currency' is a required property", "input.amount: 'abc' is no number"]
    exc = InvalidInput("invalid input for workflow 'orders' (version v1)", problems)
    answer = outcome(exc)
    assert (answer.status, answer.problems) == (400, tuple(problems))
    assert str(exc) == (
        "invalid input for workflow 'orders' (version v1):\n"
        "  input: 'currency' is a required property\n"
        "  input.amount: 'abc' is no number"
    )
    back = error_of(answer.status, answer.message, answer.problems)
    assert isinstance(back, InvalidInput)
    assert (str(back), back.problems) == (str(exc), problems)
    # A deploy's problems stay a manifest's.
    deployed = error_of(400, "invalid manifest", ("steps: x",), "a.yaml")
    assert isinstance(deployed, ManifestError)


class _OldWorkflow(msgspec.Struct, frozen=True, kw_only=True):
    """Workflow as a natsflow without input schemas knew it (lenient, like the real one)."""

    name: str
    steps: dict[str, Any]
    description: str = ""


class _OldDefinition(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    workflow: _OldWorkflow
    deployed_at: float


def test_stored_definitions_with_and_without_input_read_both_ways() -> None:
    wf = parse_manifest(orjson.dumps(manifest(ORDER)), "json")
    record = StoredDefinition(name="orders", version="v", workflow=wf, deployed_at=1.0)
    data = msgspec.json.encode(record)
    # an older natsflow reads a definition with `input` (and ignores it) ...
    assert msgspec.json.decode(data, type=_OldDefinition).workflow.name == "orders"
    assert decode_deployed(data).workflow.input == ORDER
    # ... and this one reads a definition stored before `input` existed.
    old = orjson.loads(data)
    del old["workflow"]["input"]
    assert decode_deployed(orjson.dumps(old)).workflow.input is None


def test_the_hello_example_declares_its_input() -> None:
    hello = load_manifest(EXAMPLES / "hello.yaml")
    assert isinstance(hello, Workflow)
    assert hello.input is not None
    assert InputSchema(hello.input).problems({"name": "Ada"}) == []
    assert InputSchema(hello.input).problems({}) == ["input: 'name' is a required property"]


def test_remote_refs_are_refused_beside_meta_schema_problems() -> None:
    schema = {"properties": {"a": {"type": "nmber"}, "b": {"$ref": "https://example.com/b"}}}
    problems = check_input_schema(schema)
    assert problems[0].startswith("input.properties.a.type: 'nmber' is not valid")
    assert problems[1].startswith("input.properties.b.$ref: reference 'https://example.com/b'")


def test_the_readme_example_deploys_and_refuses_as_documented() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Input schema (`input`)") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n", 8)]
    wf = parse_manifest(example, "yaml")
    assert wf.input is not None
    problems = InputSchema(wf.input).problems({"amount": "abc", "lines": [{"sku": "a"}, {}]})
    listing = section[section.index("```text\n") : section.index("  ```\n", 10)]
    assert "invalid input for workflow 'charge' (version " in listing
    assert [line.strip() for line in listing.splitlines()[2:]] == problems
