"""Custom actions' contracts: the JSON Schemas a manifest declares for their input and output.

A manifest may declare, per custom action it uses (``manifests.custom``), what
the action takes and gives::

    actions:
      billing.charge:
        description: charge a card
        input:  {type: object, required: [amount], properties: {amount: {type: number}}}
        output: {type: object, required: [receipt], properties: {receipt: {type: string}}}

Both schemas are optional; they are JSON Schemas as the workflow's ``input`` is
(``manifests.inputs``: Draft 2020-12 by default, local references only).

- At deploy (``check_contracts``): each key names a custom action a step uses,
  each schema is valid, and each step's literal ``with`` fits its action's input
  schema, templates aside (a value holding ``${{ ... }}`` is known only when
  rendered, so what it could change is not judged; missing and unknown keys are).
- Before each dispatch (``enforce_inputs``): the rendered ``with`` must fit the
  input schema, or the step fails at once with kind ``invalid_input`` naming the
  path (rendering again would give the same input: no retry).
- When a worker's result comes back (``checked_output``): an output that does
  not fit the output schema fails the attempt with kind ``invalid_output``,
  retried as the step's ``retry`` says (another attempt may answer better).

Pure: the validators are compiled once per schema and kept.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import msgspec
from jsonschema.exceptions import ValidationError

from natsflow.events.messages import ErrorInfo, Result
from natsflow.events.model import AnyEvent, ExecutionState, StepDeadlineSet, StepScheduled
from natsflow.manifests.custom import custom_action_problem
from natsflow.manifests.expressions import is_template
from natsflow.manifests.inputs import InputSchema, check_input_schema, render_path
from natsflow.manifests.schema import Workflow
from natsflow.manifests.scope import final_failure
from natsflow.manifests.structure import Problems, join

__all__ = [
    "INVALID_INPUT",
    "INVALID_OUTPUT",
    "check_contracts",
    "checked_output",
    "enforce_inputs",
    "input_problems",
    "output_problems",
]

INVALID_INPUT = "invalid_input"
INVALID_OUTPUT = "invalid_output"

# Validators that judge an object's keys, never a value: a template cannot change them.
_KEY_VALIDATORS = frozenset(
    {"required", "additionalProperties", "propertyNames", "dependentRequired"}
)


@functools.lru_cache(maxsize=256)
def _compiled(encoded: bytes, root: str) -> InputSchema:
    return InputSchema(msgspec.json.decode(encoded), root)


def _schema(schema: dict[str, Any], root: str) -> InputSchema:
    # Keyed by the schema's canonical JSON: equal schemas share one compiled validator.
    return _compiled(msgspec.json.encode(schema, order="sorted"), root)


def _where(action: str, part: str) -> str:
    return render_path("actions", [action, part])


# --- deploy ------------------------------------------------------------------


def check_contracts(doc: dict[str, Any], problems: Problems) -> None:
    """Check the ``actions`` of a structurally checked manifest document, and each step's
    literal ``with`` against its action's input schema."""
    contracts = doc.get("actions")
    if not isinstance(contracts, dict):
        return
    raw_steps = doc.get("steps")
    steps = raw_steps if isinstance(raw_steps, dict) else {}
    used = {s.get("action") for s in steps.values() if isinstance(s, dict)}
    for name, contract in contracts.items():
        where = render_path("actions", [str(name)])
        if not isinstance(name, str) or (reason := custom_action_problem(name)) is not None:
            problems.append(f"{where}: only custom actions have contracts here ({reason})")
            continue
        if name not in used:
            problems.append(f"{where}: no step uses action {name!r} (a typo?)")
        if not isinstance(contract, dict):
            continue  # the structural pass said why
        for part in ("input", "output"):
            schema = contract.get(part)
            if isinstance(schema, dict):
                problems.extend(check_input_schema(schema, _where(name, part)))
    valid = {
        name: contract["input"]
        for name, contract in contracts.items()
        if isinstance(contract, dict)
        and isinstance(contract.get("input"), dict)
        and not check_input_schema(contract["input"])
    }
    for step_name, step in steps.items():
        if not isinstance(step, dict) or step.get("action") not in valid:
            continue
        with_ = step.get("with", {})
        schema = _schema(valid[step["action"]], join(join("steps", step_name), "with"))
        problems.extend(schema.problems(with_, keep=lambda e: _judged(e)))


def _judged(error: ValidationError) -> bool:
    """Whether an error holds whatever the templates render to: it is about keys, or the
    value it judges holds no template."""
    return error.validator in _KEY_VALIDATORS or not _holds_template(error.instance)


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_holds_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_template(v) for v in value)
    return False


# --- run time ----------------------------------------------------------------


def input_problems(workflow: Workflow, action: str, rendered: Any) -> list[str]:
    """How a step's rendered ``with`` breaks ``action``'s input schema (none declared: [])."""
    contract = workflow.actions.get(action)
    if contract is None or contract.input is None:
        return []
    return _schema(contract.input, "input").problems(rendered)


def output_problems(workflow: Workflow, action: str, output: Any) -> list[str]:
    """How a worker's output breaks ``action``'s output schema (none declared: [])."""
    contract = workflow.actions.get(action)
    if contract is None or contract.output is None:
        return []
    return _schema(contract.output, "output").problems(output)


def enforce_inputs(
    events: Iterable[AnyEvent], state: ExecutionState, workflow: Workflow, now: float
) -> list[AnyEvent]:
    """A decision round's events, each dispatch whose input breaks its action's input schema
    turned into the step's final failure (kind ``invalid_input``), its deadlines dropped."""
    out = list(events)
    if not workflow.actions:
        return out
    refused: set[tuple[str, int]] = set()
    for i, event in enumerate(out):
        if not isinstance(event, StepScheduled):
            continue
        problems = input_problems(workflow, event.action, event.input)
        if not problems:
            continue
        refused.add((event.step, event.attempt))
        before = state.steps.get(event.step)
        error = (
            f"the input of {event.action} does not fit {_where(event.action, 'input')}: "
            + "; ".join(problems)
        )
        attempt = before.attempt if before is not None else 0
        out[i] = final_failure(event.step, attempt, error, INVALID_INPUT, now, event.iteration)
    return [
        e for e in out if not (isinstance(e, StepDeadlineSet) and (e.step, e.attempt) in refused)
    ]


def checked_output(workflow: Workflow, action: str, result: Result) -> Result:
    """``result`` as it is, or, when its output breaks ``action``'s output schema, a failed
    result of kind ``invalid_output`` (retryable) saying where."""
    if not result.ok or not workflow.actions:
        return result
    problems = output_problems(workflow, action, result.output)
    if not problems:
        return result
    message = f"the output of {action} does not fit {_where(action, 'output')}: " + "; ".join(
        problems
    )
    error = ErrorInfo(message=message, kind=INVALID_OUTPUT, retryable=True)
    return msgspec.structs.replace(result, ok=False, output=None, error=error)
