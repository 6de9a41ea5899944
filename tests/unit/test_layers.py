"""The one-way house: each layer imports only the layers below it.

    natsflow.events            types, fold, codec, errors, views (nothing of ours)
    natsflow.manifests         schema, expressions, the manifest decider, actions
    natsflow.code              code workflows: the @workflow/@step API and their decider
    natsflow.actors.jetstream  the JetStream adapter (the only code speaking NATS errors)
    natsflow.actors            execution actor, workers, actions, the start use case
    natsflow.service           CLI, HTTP, admin micro service, process wiring, client
    natsflow.testing           users' test support: a test environment, the replayer

Read from the source with ``ast``: nothing is imported to check it.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "natsflow"
LAYERS = (
    "natsflow.events",
    "natsflow.manifests",
    "natsflow.code",
    "natsflow.actors.jetstream",
    "natsflow.actors",
    "natsflow.service",
    "natsflow.testing",
)
# The pure core does no I/O: no network, clock, randomness or event loop.
PURE = ("natsflow.events", "natsflow.manifests", "natsflow.code")
IMPURE = ("nats", "anyio", "asyncio", "aiohttp", "aiosqlite", "time", "random", "uuid", "socket")
# NATS errors are mapped once, in the adapter; the client maps a request's connection
# errors to its own, and the nats.request action maps a responder's to step errors.
NATS_ERRORS = ("nats.errors", "nats.js.errors")
SPEAKS_NATS_ERRORS = (
    "natsflow.actors.jetstream",
    "natsflow.actors.actions._nats",
    "natsflow.service.client",
)


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the most specific layer holding ``module``."""
    matches = [i for i, layer in enumerate(LAYERS) if _under(module, (layer,))]
    return max(matches, key=lambda i: len(LAYERS[i])) if matches else None


def modules() -> dict[str, Path]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in (f for f in files if f.endswith(".py")):
            path = Path(folder, file)
            parts = path.relative_to(PACKAGE).with_suffix("").parts
            out[".".join(("natsflow", *parts)).removesuffix(".__init__")] = path
    return dict(sorted(out.items()))


def imports(source: str, module: str) -> list[str]:
    """Every module ``source`` imports (relative imports resolved against ``module``)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def upward_imports(module: str, source: str) -> list[str]:
    """The imports of ``module`` that reach a layer above its own."""
    own = layer_of(module)
    if own is None:
        return []
    return [
        name
        for name in imports(source, module)
        if (other := layer_of(name)) is not None and other > own
    ]


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_module_belongs_to_a_layer() -> None:
    found = modules()
    assert len(found) > 30, f"the package was not found under {PACKAGE}"
    strays = [m for m in found if m != "natsflow" and layer_of(m) is None]
    assert strays == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_upward(module: str) -> None:
    assert upward_imports(module, modules()[module].read_text()) == []


@pytest.mark.parametrize("module", sorted(m for m in modules() if _under(m, PURE)))
def test_the_pure_core_does_no_io(module: str) -> None:
    used = [n for n in imports(modules()[module].read_text(), module) if _under(n, IMPURE)]
    assert used == [], f"{module} imports {used}"


@pytest.mark.parametrize("module", sorted(modules()))
def test_only_the_adapter_speaks_nats_errors(module: str) -> None:
    if _under(module, SPEAKS_NATS_ERRORS):
        return
    used = [n for n in imports(modules()[module].read_text(), module) if _under(n, NATS_ERRORS)]
    assert used == [], f"{module} imports {used}: map NATS errors in natsflow.actors.jetstream"


def test_the_check_catches_an_upward_import() -> None:
    source = "from natsflow.actors.jetstream.store import EventStore\nimport natsflow.service.cli\n"
    assert upward_imports("natsflow.events.fold", source) == [
        "natsflow.actors.jetstream.store",
        "natsflow.actors.jetstream.store.EventStore",
        "natsflow.service.cli",
    ]
    assert upward_imports("natsflow.actors.jetstream.store", "from .. import worker\n") == [
        "natsflow.actors",
        "natsflow.actors.worker",
    ]
    assert upward_imports("natsflow.service.cli", "from natsflow.events import model\n") == []
