"""The README's Python workers, run as written: each block marked
``<!-- readme-worker: TAG -->`` is taken from README.md, run as its own process with
plain nats-py (no natsflow import), and serves a step of a real execution. A README
edit that breaks a worker fails here."""

from __future__ import annotations

import sys
from pathlib import Path

from nats.aio.client import Client as Nats

from natsflow.service.embedded import EmbeddedServer
from tests.contract import Recorder
from tests.foreign import imported_modules, log_tail, readme_worker, worker_process
from tests.integration.harness import running

PAY = """
name: pay
steps:
  charge:
    action: billing.charge
    with: {amount: "${{ input.amount }}"}
  notify:
    action: shell
    needs: [charge]
    with: {argv: [echo, '{"sent": "${{ steps.charge.output.receipt }}"}']}
output: "${{ steps.notify.output }}"
"""

ECHO = """
name: echo
steps:
  a:
    action: noop
    with: {x: "${{ input.x }}"}
output: "${{ steps.a.output }}"
"""


def _script(tag: str, tmp_path: Path) -> Path:
    source = readme_worker(tag)
    assert "natsflow" not in imported_modules(source), "a README worker must not need natsflow"
    script = tmp_path / "worker.py"
    script.write_text(source)
    return script


async def test_the_readme_worker_of_a_custom_action_serves_it(
    nats_server: EmbeddedServer, nc: Nats, tmp_path: Path
) -> None:
    script = _script("billing.charge", tmp_path)
    recorder = await Recorder().start(nc)
    async with running(nats_server) as engine:
        await engine.deploy(PAY)  # makes the consumer the worker binds to
        log = tmp_path / "worker.log"
        async with worker_process([sys.executable, str(script)], nats_server.url, log):
            execution = await engine.start("pay", {"amount": 12})
            done = await engine.wait_done(execution)
        assert done["status"] == "completed", f"{done}\nworker:\n{log_tail(log)}"
        assert done["steps"]["charge"]["attempts"][0]["kind"] is None
        assert done["output"] == {"sent": "r-12"}
    await recorder.stop()
    recorder.assert_valid()
    charged = [r["output"] for r in recorder.heard["result"] if r["step"] == "charge"]
    assert charged == [{"receipt": "r-12"}]  # the README worker's own result, as the schema says


async def test_the_readme_raw_worker_serves_the_built_in_actions(
    nats_server: EmbeddedServer, nc: Nats, tmp_path: Path
) -> None:
    script = _script("natsflow-workers", tmp_path)
    recorder = await Recorder().start(nc)
    # no natsflow workers: the README's worker is the only one on natsflow-workers
    async with running(nats_server, workers=0) as engine:
        await engine.deploy(ECHO)
        log = tmp_path / "worker.log"
        async with worker_process([sys.executable, str(script)], nats_server.url, log):
            execution = await engine.start("echo", {"x": 5})
            done = await engine.wait_done(execution)
        assert done["status"] == "completed", f"{done}\nworker:\n{log_tail(log)}"
        assert done["output"] == {"echo": {"x": 5}}
        assert done["steps"]["a"]["progress"] == "working"
    await recorder.stop()
    recorder.assert_valid()
    assert [m["message"] for m in recorder.heard["progress"]] == ["working"]
