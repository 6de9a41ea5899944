"""The semantic pass of manifest validation: what the schema's types cannot say.

Every check reads the (structurally checked, possibly still invalid) document
defensively and appends ``path: reason`` problems to a list; none raises.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from typing import Any, get_args

from natsflow.manifests.actions import ACTIONS
from natsflow.manifests.custom import custom_action_problem
from natsflow.manifests.expressions import (
    is_template,
    parse_check,
    referenced_names,
    referenced_steps,
    single_template,
)
from natsflow.manifests.schedules import check_schedule
from natsflow.manifests.schema import RetryPolicy, StepName
from natsflow.manifests.structure import Problems, join, show

__all__ = ["check_semantics"]

_DEFAULT_RETRY = RetryPolicy()
_STEP_NAME = re.compile(get_args(StepName)[1].pattern)
_SCOPE_ROOTS = ("input", "steps", "item", "loop", "output", "execution", "trigger")
_SUBJECT_TOKEN = re.compile(r"[^\s.*>]+|\*|>")
_UNAVAILABLE = {
    "item": "item is bound in a for_each step's with, key and needs",
    "loop": "loop is bound in a step with repeat",
    "output": "output is the iteration's output, bound in repeat.until only",
    "steps": "no step has run when it is evaluated",
}


def _names(value: Any) -> list[str]:
    """The strings of a list-typed field, ignoring what the structural pass refused."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


# --- entry point -------------------------------------------------------------


def check_semantics(doc: dict[str, Any], problems: Problems) -> None:
    """Check references, cycles, actions, ``with`` keys, templates and triggers.

    ``doc`` is the output of the structural pass; each step's ``with`` is checked
    against its action's params struct (``manifests.actions``) and replaced in
    place by its normalized form (literal durations in seconds).
    """
    raw_steps = doc.get("steps")
    steps = (
        {k: v for k, v in raw_steps.items() if isinstance(k, str)}
        if isinstance(raw_steps, dict)
        else {}
    )
    if isinstance(raw_steps, dict) and not raw_steps:
        problems.append("steps: at least one step is required")
    deps = _check_dependencies(steps, problems)
    _check_cycles(deps, problems)
    for name, step in steps.items():
        if isinstance(step, dict):
            _check_step(name, step, set(steps), _upstream(name, deps), problems)
    workflow_roots = {"input", "steps", "execution", "trigger"}
    _check_templates(doc.get("output"), "output", workflow_roots, set(steps), None, problems)
    # Rendered before the execution exists: the input (and a trigger message's subject, headers).
    _check_templates(
        doc.get("idempotency_key"),
        "idempotency_key",
        {"input", "trigger"},
        set(),
        None,
        problems,
    )
    triggers = doc.get("triggers")
    for i, trigger in enumerate(triggers if isinstance(triggers, list) else []):
        if isinstance(trigger, dict):
            _check_trigger(trigger, f"triggers[{i}]", problems)


# --- the DAG -----------------------------------------------------------------


def _check_dependencies(steps: dict[str, Any], problems: Problems) -> dict[str, list[str]]:
    """Check step names and needs/after; return each step's valid dependencies."""
    deps: dict[str, list[str]] = {}
    for name, step in steps.items():
        path = join("steps", name)
        if not _STEP_NAME.fullmatch(name):
            problems.append(
                f"{path}: invalid step name {show(name)} (letters, digits, _ and -, "
                "starting with a letter or _, at most 64 characters)"
            )
        deps[name] = []
        for field, self_reason in (("needs", "need"), ("after", "come after")):
            for dep in _names(_get(step, field)):
                if dep == name:
                    problems.append(f"{path}.{field}: a step cannot {self_reason} itself")
                elif dep not in steps:
                    problems.append(f"{path}.{field}: unknown step {show(dep)}")
                elif dep not in deps[name]:
                    deps[name].append(dep)
    return deps


def _check_cycles(deps: dict[str, list[str]], problems: Problems) -> None:
    """Report one cycle per strongly connected group of steps."""
    components = [c for c in _components(deps) if len(c) > 1]
    for component in sorted(components, key=min):
        cycle = _cycle_through(min(component), component, deps)
        problems.append("steps: cycle " + " -> ".join(cycle))


def _components(deps: dict[str, list[str]]) -> list[set[str]]:
    """Strongly connected components (Kosaraju, iterative: deep DAGs are fine)."""
    order: list[str] = []
    seen: set[str] = set()
    for root in deps:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:
            node, edges = stack[-1]
            nxt = next((d for d in edges if d not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(deps[nxt])))
    reverse: dict[str, list[str]] = {name: [] for name in deps}
    for name, targets in deps.items():
        for target in targets:
            reverse[target].append(name)
    assigned: set[str] = set()
    components: list[set[str]] = []
    for root in reversed(order):
        if root in assigned:
            continue
        component, todo = set(), [root]
        assigned.add(root)
        while todo:
            node = todo.pop()
            component.add(node)
            for prev in reverse[node]:
                if prev not in assigned:
                    assigned.add(prev)
                    todo.append(prev)
        components.append(component)
    return components


def _cycle_through(start: str, component: set[str], deps: dict[str, list[str]]) -> list[str]:
    """The shortest cycle from ``start`` back to itself inside ``component``."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for dep in deps[node]:
            if dep == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if dep in component and dep not in parent:
                parent[dep] = node
                queue.append(dep)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def _upstream(name: str, deps: dict[str, list[str]]) -> set[str]:
    """Every step ``name`` waits for, directly or transitively."""
    found: set[str] = set()
    todo = list(deps.get(name, ()))
    while todo:
        dep = todo.pop()
        if dep not in found:
            found.add(dep)
            todo.extend(deps[dep])
    return found


# --- one step ----------------------------------------------------------------


def _check_step(
    name: str, step: dict[str, Any], known: set[str], upstream: set[str], problems: Problems
) -> None:
    path = join("steps", name)
    action = step.get("action")
    spec = ACTIONS.get(action) if isinstance(action, str) else None
    if isinstance(action, str) and spec is None and (why := custom_action_problem(action)):
        expected = ", ".join(ACTIONS)
        problems.append(
            f"{path}.action: unknown action {show(action)} (expected one of: {expected};"
            f" or a custom action: {why})"
        )
    with_ = step.get("with", {})
    if spec is not None and isinstance(with_, dict):
        step["with"] = spec.check(with_, f"{path}.with", problems, templates=True)
    for_each, repeat = _get(step, "for_each"), _get(step, "repeat")
    if for_each is not None and repeat is not None:
        problems.append(f"{path}: for_each and repeat cannot be combined")
    if repeat is not None and spec is not None and spec.runs == "engine":
        problems.append(
            f"{path}.repeat: a {action} step cannot repeat (use repeat.sleep on the step)"
        )
    retry = step.get("retry")
    if isinstance(retry, dict):
        delay = retry.get("delay", _DEFAULT_RETRY.delay)
        max_delay = retry.get("max_delay", _DEFAULT_RETRY.max_delay)
    else:
        delay = max_delay = None
    if isinstance(delay, float) and isinstance(max_delay, float) and max_delay < delay:
        problems.append(f"{path}.retry.max_delay: must be >= delay ({max_delay} < {delay})")

    roots = {"input", "steps", "execution", "trigger"} | ({"loop"} if repeat is not None else set())
    with_item = roots | ({"item"} if for_each is not None else set())
    owner = (name, upstream)
    _check_templates(step.get("with"), join(path, "with"), with_item, known, owner, problems)
    expressions = [
        # `when` decides whether the step (or the whole fan-out or loop) runs at all:
        # no `item` or `loop` yet.
        ("when", step.get("when"), roots - {"loop"}),
        ("for_each.items", _get(for_each, "items"), roots),
        ("for_each.key", _get(for_each, "key"), with_item),
        ("for_each.needs", _get(for_each, "needs"), with_item),
        ("for_each.after", _get(for_each, "after"), with_item),
        # `output` is the iteration's own output, only in `until`.
        ("repeat.until", _get(repeat, "until"), roots | {"output"}),
    ]
    for field, value, allowed in expressions:
        site = join(path, field)
        if isinstance(value, str) and single_template(value) is None:
            wanted = "exactly one template" if is_template(value) else "a template"
            problems.append(f'{site}: expected {wanted} like "${{{{ ... }}}}", got {show(value)}')
        _check_templates(value, site, allowed, known, owner, problems)


def _check_templates(
    value: Any,
    path: str,
    allowed: set[str],
    known: set[str],
    owner: tuple[str, set[str]] | None,
    problems: Problems,
) -> None:
    """Check the templates within ``value``: syntax, scope names, step references.

    ``owner`` is the step the templates belong to and its upstream steps; a
    template may read only those. The workflow output (no owner) may read any.
    """
    for site, text in _strings_at(value, path):
        if not is_template(text):
            continue
        reasons = parse_check(text)
        problems.extend(f"{site}: {reason}" for reason in reasons)
        if reasons:
            continue
        for root in sorted(referenced_names(text) - allowed):
            if root in _SCOPE_ROOTS:
                hint = _UNAVAILABLE.get(root, "")
                problems.append(f"{site}: {show(root)} is not available here ({hint})")
            else:
                expected = ", ".join(r for r in _SCOPE_ROOTS if r in allowed)
                problems.append(f"{site}: unknown name {show(root)} (expected one of: {expected})")
        if "steps" not in allowed:
            continue
        for ref in sorted(referenced_steps(text)):
            if ref not in known:
                problems.append(f"{site}: references unknown step {show(ref)}")
            elif owner is not None and ref not in owner[1]:
                problems.append(
                    f"{site}: references step {show(ref)} which is not in needs/after of "
                    f"{show(owner[0])}"
                )


def _strings_at(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string within ``value`` with its path (dict keys are not visited)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_at(item, join(path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings_at(item, f"{path}[{i}]")


# --- triggers ----------------------------------------------------------------


def _check_trigger(trigger: dict[str, Any], path: str, problems: Problems) -> None:
    subject = trigger.get("subject")
    check_schedule(trigger, path, problems)
    if isinstance(subject, str):
        tokens = subject.split(".")
        if not all(_SUBJECT_TOKEN.fullmatch(t) for t in tokens) or ">" in tokens[:-1]:
            problems.append(f"{path}.subject: invalid NATS subject {show(subject)}")
        elif tokens[0] == "natsflow":
            problems.append(f"{path}.subject: subjects under natsflow. are reserved")
