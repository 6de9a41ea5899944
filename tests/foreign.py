"""Foreign workers in tests: a worker program run as its own process, as a team runs it.

``readme_worker(tag)`` is the README's Python block marked ``<!-- readme-worker: TAG -->``
(so a test of it fails when the README drifts); ``worker_process(argv, url, log)`` runs
a worker with ``NATS_URL`` set, its output in ``log``, and stops it with SIGTERM after.
"""

from __future__ import annotations

import ast
import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples" / "workers"


def readme_worker(tag: str) -> str:
    """The fenced Python block right after ``<!-- readme-worker: TAG -->`` in the README."""
    pattern = rf"<!-- readme-worker: {re.escape(tag)} -->\n```python\n(.*?)\n```\n"
    found = re.findall(pattern, README.read_text(), flags=re.DOTALL)
    assert len(found) == 1, f"README.md has {len(found)} blocks marked readme-worker: {tag}"
    return str(found[0]) + "\n"


def imported_modules(source: str) -> set[str]:
    """The top-level names of every module ``source`` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module.split(".")[0])
    return names


def log_tail(log: Path, lines: int = 40) -> str:
    """The end of a worker's output, for an assertion message."""
    if not log.exists():
        return "(no output)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(10, shield=True):
            await process.wait()
            return
        process.kill()
    with anyio.CancelScope(shield=True):
        await process.wait()


@asynccontextmanager
async def worker_process(
    argv: list[str], url: str, log: Path, cwd: Path | None = None
) -> AsyncIterator[Process]:
    """Run a worker program (``argv``) against ``url``; its stdout and stderr go to ``log``.

    If the worker exits while the block runs, the test fails with its output.
    """
    env = {**os.environ, "NATS_URL": url}
    output = await anyio.open_file(log, "wb")
    try:
        process = await anyio.open_process(
            argv, env=env, cwd=cwd, stdout=output.wrapped, stderr=output.wrapped
        )
        try:
            yield process
            assert process.returncode is None, (
                f"the worker {argv} exited with {process.returncode}:\n{log_tail(log)}"
            )
        finally:
            await _stop(process)
    finally:
        await output.aclose()
