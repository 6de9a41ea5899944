"""A tiny, safe expression language for manifests: ``"${{ ... }}"`` templates.

An expression reads values from a scope and compares them; it cannot call,
import, loop or compute. At run time the scope looks like::

    {
        "input": <the workflow input>,
        "steps": {name: {"output": ..., "status": "completed" | "failed" | "skipped"}},
        "item": <the current for_each item>,
        "loop": {"output": <previous iteration's output>, "iteration": int},
        "execution": {"id": str, "workflow": str},
    }

Grammar (a whitelisted subset of Python expressions):

- names from the scope, and the literals ``true``, ``false``, ``null``
  (Python's ``True``, ``False``, ``None`` work too);
- ``a.b`` and ``a["b"]`` read key ``b`` of mapping ``a``; ``a[0]`` reads a list;
- string, number, list, tuple and dict literals;
- comparisons ``== != < <= > >= in not in``, ``and``, ``or``, ``not``, unary ``-``;
- one function, ``len(x)``.

A missing key is an error naming the path (``steps.load.output has no key 'x'``),
never a silent null.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

import orjson

from natsflow.events.errors import ExpressionError

__all__ = [
    "evaluate",
    "is_template",
    "parse_check",
    "referenced_names",
    "referenced_steps",
    "render",
    "single_template",
    "template_expressions",
]

_OPEN = "${{"
_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda a, b: a in b),
    ast.NotIn: ("not in", lambda a, b: a not in b),
}
_OP_SYMBOLS: dict[type[ast.AST], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.UAdd: "unary +",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_REFUSED: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.IfExp: "conditional expression (x if c else y)",
    ast.NamedExpr: "assignment expression (:=)",
    ast.JoinedStr: "f-string",
    ast.Set: "set literal",
    ast.Slice: "slice",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


# --- templates inside strings ------------------------------------------------


def _segments(text: str) -> list[str | tuple[str]]:
    """Split ``text`` into literal text and ``(expression,)`` parts.

    Raises ExpressionError on a ``${{`` that is never closed.
    """
    parts: list[str | tuple[str]] = []
    pos = 0
    for match in _TEMPLATE.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append((match.group(1).strip(),))
        pos = match.end()
    rest = text[pos:]
    if _OPEN in rest:
        raise ExpressionError(rest, "unterminated template: '${{' without a closing '}}'")
    if rest:
        parts.append(rest)
    return parts


def is_template(text: str) -> bool:
    """Tell whether ``text`` contains at least one ``${{ ... }}`` template."""
    return _OPEN in text


def single_template(text: str) -> str | None:
    """Return the expression when ``text`` is exactly one template, else None.

    Such a string renders to the expression's value with its type kept.
    """
    match = _TEMPLATE.fullmatch(text)
    if match is None:
        return None
    inner = match.group(1)
    if "}}" in inner or _OPEN in inner:
        return None
    return inner.strip()


def template_expressions(text: str) -> list[str]:
    """Return the expressions of every template in ``text``, in order."""
    return [part[0] for part in _segments(text) if isinstance(part, tuple)]


def _strings(value: Any) -> Iterator[str]:
    """Yield every string within ``value`` (dict values, list items), not dict keys."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


# --- parsing -----------------------------------------------------------------


@lru_cache(maxsize=4096)
def _compile(expr: str) -> ast.expr:
    """Parse ``expr`` and check it against the whitelist (cached)."""
    if not expr.strip():
        raise ExpressionError(expr, "empty expression")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(expr, f"invalid syntax: {exc.msg}") from None
    _check(tree.body, expr)
    return tree.body


def _check(node: ast.AST, expr: str) -> None:
    """Refuse every construct outside the whitelist, naming it."""
    match node:
        case ast.Constant(value=value):
            if not isinstance(value, _CONSTANT_TYPES):
                raise ExpressionError(
                    expr, f"literal of type {type(value).__name__} is not allowed"
                )
            return
        case ast.Name(id=name):
            if name.startswith("__"):
                raise ExpressionError(expr, f"dunder name {name!r} is not allowed")
            return
        case ast.Attribute(value=value, attr=attr):
            if attr.startswith("__"):
                raise ExpressionError(expr, f"dunder attribute {attr!r} is not allowed")
            _check(value, expr)
            return
        case ast.Subscript(value=value, slice=index):
            _check(value, expr)
            _check(index, expr)
            return
        case ast.List(elts=elts) | ast.Tuple(elts=elts):
            for elt in elts:
                _check(elt, expr)
            return
        case ast.Dict(keys=keys, values=values):
            if any(key is None for key in keys):
                raise ExpressionError(expr, "unpacking (**) is not allowed")
            for part in (*keys, *values):
                if part is not None:
                    _check(part, expr)
            return
        case ast.Compare(left=left, ops=ops, comparators=rest):
            for op in ops:
                if type(op) not in _COMPARE:
                    raise ExpressionError(expr, f"operator {_name_of(op)!r} is not allowed")
            for part in (left, *rest):
                _check(part, expr)
            return
        case ast.BoolOp(values=values):
            for part in values:
                _check(part, expr)
            return
        case ast.UnaryOp(op=ast.Not() | ast.USub(), operand=operand):
            _check(operand, expr)
            return
        case ast.Call(func=ast.Name(id="len"), args=[arg], keywords=[]):
            _check(arg, expr)
            return
        case ast.Call():
            raise ExpressionError(expr, "function calls are not allowed (only len(x))")
    raise ExpressionError(expr, f"{_name_of(node)} is not allowed")


def _name_of(node: ast.AST) -> str:
    """Describe a refused AST node for an error message."""
    if type(node) in _OP_SYMBOLS:
        return _OP_SYMBOLS[type(node)]
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"operator {_name_of(node.op)!r}"
    return _REFUSED.get(type(node), type(node).__name__)


# --- evaluation --------------------------------------------------------------


def evaluate(expr: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate ``expr`` (the inside of ``${{ }}``) against ``scope``.

    Raises ExpressionError when the expression is invalid, reads a missing
    name, key or index, or compares values that cannot be compared.
    """
    return _Evaluator(expr, scope).eval(_compile(expr))


def _kind(value: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "bool"
        case Mapping():
            return "mapping"
        case list() | tuple():
            return "list"
    return type(value).__name__


class _Evaluator:
    """Walk a checked expression tree over one scope."""

    def __init__(self, expr: str, scope: Mapping[str, Any]) -> None:
        self.expr = expr
        self.scope = scope

    def fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.expr, reason)

    def eval(self, node: ast.expr) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                return self.name(name)
            case ast.Attribute(value=value, attr=attr):
                return self.key(self.eval(value), attr, value)
            case ast.Subscript(value=value, slice=index):
                return self.key(self.eval(value), self.eval(index), value)
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [self.eval(elt) for elt in elts]
            case ast.Dict(keys=keys, values=values):
                return self.mapping(keys, values)
            case ast.Compare(left=left, ops=ops, comparators=rest):
                return self.compare(left, ops, rest)
            case ast.BoolOp(op=op, values=values):
                return self.boolop(op, values)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self.eval(operand)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return self.negate(self.eval(operand))
            case ast.Call(args=[arg]):
                return self.length(self.eval(arg))
        raise self.fail(f"{_name_of(node)} is not allowed")  # pragma: no cover - checked

    def name(self, name: str) -> Any:
        if name in _LITERALS:
            return _LITERALS[name]
        if name in self.scope:
            return self.scope[name]
        available = ", ".join(sorted(self.scope)) or "none"
        raise self.fail(f"unknown name {name!r} (available: {available})")

    def key(self, container: Any, key: Any, where: ast.expr) -> Any:
        path = ast.unparse(where)
        if isinstance(container, Mapping):
            if not isinstance(key, str):
                raise self.fail(f"{path} is a mapping: its keys are strings, not {_kind(key)}")
            if key not in container:
                raise self.fail(f"{path} has no key {key!r}")
            return container[key]
        if isinstance(container, list | tuple):
            if not isinstance(key, int) or isinstance(key, bool):
                raise self.fail(f"{path} is a list: index it with an int, not {key!r}")
            if not -len(container) <= key < len(container):
                raise self.fail(f"{path} has no index {key} (length {len(container)})")
            return container[key]
        raise self.fail(f"{path} is {_kind(container)}, so it has no key {key!r}")

    def compare(self, left: ast.expr, ops: list[ast.cmpop], rest: list[ast.expr]) -> bool:
        a = self.eval(left)
        for op, node in zip(ops, rest, strict=True):
            b = self.eval(node)
            symbol, test = _COMPARE[type(op)]
            try:
                if not test(a, b):
                    return False
            except TypeError:
                raise self.fail(f"cannot compare {_kind(a)} {symbol} {_kind(b)}") from None
            a = b
        return True

    def mapping(self, keys: list[ast.expr | None], values: list[ast.expr]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in zip(keys, values, strict=True):
            key = self.eval(key_node) if key_node is not None else None
            try:
                out[key] = self.eval(value_node)
            except TypeError:
                raise self.fail(f"a {_kind(key)} cannot be a dict key") from None
        return out

    def boolop(self, op: ast.boolop, values: list[ast.expr]) -> Any:
        result: Any = None
        for node in values:
            result = self.eval(node)
            if isinstance(op, ast.And) and not result:
                return result
            if isinstance(op, ast.Or) and result:
                return result
        return result

    def negate(self, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
        raise self.fail(f"cannot negate {_kind(value)}")

    def length(self, value: Any) -> int:
        if isinstance(value, str | list | tuple | Mapping):
            return len(value)
        raise self.fail(f"len() of {_kind(value)}")


# --- rendering values --------------------------------------------------------


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """Replace every template within ``value`` (recursively) using ``scope``.

    A string that is exactly one template becomes the expression's value, type
    kept (list, dict, int, ...). Templates within longer text are interpolated:
    strings as-is, other values as compact JSON. Dict keys are not rendered;
    values without templates come back unchanged.
    """
    if isinstance(value, str):
        return _render_str(value, scope) if _OPEN in value else value
    if isinstance(value, dict):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    if isinstance(value, tuple):
        return tuple(render(item, scope) for item in value)
    return value


def _render_str(text: str, scope: Mapping[str, Any]) -> Any:
    expr = single_template(text)
    if expr is not None:
        return evaluate(expr, scope)
    out: list[str] = []
    for part in _segments(text):
        if isinstance(part, str):
            out.append(part)
            continue
        result = evaluate(part[0], scope)
        if isinstance(result, str):
            out.append(result)
            continue
        try:
            out.append(orjson.dumps(result).decode())
        except TypeError:
            raise ExpressionError(
                part[0], f"a {_kind(result)} value cannot be written into text"
            ) from None
    return "".join(out)


# --- static checks -----------------------------------------------------------


def parse_check(value: Any) -> list[str]:
    """Syntax-check every template within ``value``; return the problems found."""
    problems: list[str] = []
    for text in _strings(value):
        if _OPEN not in text:
            continue
        try:
            for expr in template_expressions(text):
                _compile(expr)
        except ExpressionError as exc:
            problems.append(str(exc))
    return problems


def _trees(value: Any) -> Iterator[ast.expr]:
    """Yield the parsed tree of every valid template within ``value``."""
    for text in _strings(value):
        if _OPEN not in text:
            continue
        try:
            exprs = template_expressions(text)
        except ExpressionError:
            continue
        for expr in exprs:
            try:
                yield _compile(expr)
            except ExpressionError:
                continue


def referenced_steps(value: Any) -> set[str]:
    """Names X of every ``steps.X`` or ``steps["X"]`` read by templates within ``value``.

    Templates that do not parse are skipped (``parse_check`` reports them).
    """
    found: set[str] = set()
    for tree in _trees(value):
        for node in ast.walk(tree):
            match node:
                case ast.Attribute(value=ast.Name(id="steps"), attr=name):
                    found.add(name)
                case ast.Subscript(value=ast.Name(id="steps"), slice=ast.Constant(value=str(name))):
                    found.add(name)
    return found


def referenced_names(value: Any) -> set[str]:
    """Root scope names (``input``, ``steps``, ``item``...) read by templates within ``value``."""
    found: set[str] = set()
    for tree in _trees(value):
        calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id not in _LITERALS and id(node) not in calls:
                found.add(node.id)
    return found
