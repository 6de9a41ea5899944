"""The example workers in other languages (examples/workers/), run as their own processes
against a real nats-server and natsflow: each serves ``billing.charge`` end to end while
natsflow serves ``shell``; a charge that fails (``ok: false``) is retried per the step's
policy when retryable and ends the step when not.

Marked ``polyglot`` and run by ``make test-polyglot``, which installs what they need
(the Node.js worker's npm packages; Go and Debian's nats.go for the Go worker). Nothing
here is skipped: a missing tool is a failure that says how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from nats.aio.client import Client as Nats

from natsflow.service.embedded import EmbeddedServer
from tests.contract import Recorder
from tests.foreign import EXAMPLES, log_tail, worker_process
from tests.integration.harness import running

pytestmark = pytest.mark.polyglot

PAY = """
name: pay
actions:
  billing.charge:
    input:
      type: object
      required: [amount]
      properties: {amount: {type: number, minimum: 0}, card: {type: string}}
    output:
      type: object
      required: [receipt]
      properties: {receipt: {type: string}}
steps:
  charge:
    action: billing.charge
    with: {amount: "${{ input.amount }}", card: "${{ input.card }}"}
    retry: {attempts: 3, delay: 0.1, backoff: fixed}
  notify:
    action: shell
    needs: [charge]
    with: {argv: [echo, '{"sent": "${{ steps.charge.output.receipt }}"}']}
output: "${{ steps.notify.output }}"
"""

# Debian's golang-github-nats-io-go-nats-dev puts nats.go here (GOPATH layout)
DEBIAN_GOPATH = Path("/usr/share/gocode")


def node_worker() -> list[str]:
    folder = EXAMPLES / "node"
    node = shutil.which("node")
    assert node is not None, "node is not installed (make test-polyglot needs Node.js >= 18)"
    assert (folder / "node_modules" / "@nats-io" / "jetstream").is_dir(), (
        f"the Node.js worker's packages are not installed: run `make test-polyglot` "
        f"(or `npm ci --prefix {folder}`)"
    )
    return [node, str(folder / "worker.js")]


def go_worker(out: Path) -> list[str]:
    go = shutil.which("go")
    assert go is not None, (
        "go is not installed: run `make test-polyglot` (apt-get install golang-go)"
    )
    gopath = os.environ.get("NATSFLOW_TEST_GOPATH", str(DEBIAN_GOPATH))
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": gopath}
    env.setdefault("GOCACHE", str(out.parent / "gocache"))
    binary = out / "billing-worker"
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=EXAMPLES / "go",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, f"the Go worker does not build:\n{built.stderr}"
    return [str(binary)]


@pytest.fixture(params=["node", "go"])
def worker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs one example worker (built first, for Go)."""
    if request.param == "node":
        return node_worker()
    return go_worker(tmp_path_factory.mktemp("go"))


async def test_an_example_worker_serves_billing_charge_end_to_end(
    worker: list[str], nats_server: EmbeddedServer, nc: Nats, tmp_path: Path
) -> None:
    recorder = await Recorder().start(nc)
    async with running(nats_server) as engine:
        await engine.deploy(PAY)  # makes the consumer the worker binds to
        log = tmp_path / "worker.log"
        async with worker_process(worker, nats_server.url, log):
            paid = await engine.start("pay", {"amount": 12, "card": "ok"})
            flaky = await engine.start("pay", {"amount": 7, "card": "flaky"})
            declined = await engine.start("pay", {"amount": 3, "card": "declined"})
            done = {e: await engine.wait_done(e) for e in (paid, flaky, declined)}
        why = f"\nworker output:\n{log_tail(log)}"
        language = "node" if "node" in worker[0] else "go"

        # served end to end: the worker's output feeds natsflow's own shell step
        assert done[paid]["status"] == "completed", f"{done[paid]}{why}"
        assert done[paid]["output"] == {"sent": "r-12"}
        charge = done[paid]["steps"]["charge"]
        assert charge["progress"] == "charging"
        assert done[paid]["steps"]["notify"]["status"] == "completed"

        # a retryable failure (ok: false) is retried per the policy, then succeeds
        assert done[flaky]["status"] == "completed", f"{done[flaky]}{why}"
        charge = done[flaky]["steps"]["charge"]
        assert [a["kind"] for a in charge["attempts"]] == ["gateway_timeout", None]
        assert charge["attempts"][0]["error"] == "payment gateway timed out"

        # a terminal failure ends the step at once (no retry), and blocks what needs it
        assert done[declined]["status"] == "failed", f"{done[declined]}{why}"
        charge = done[declined]["steps"]["charge"]
        assert (charge["error_kind"], charge["error"]) == ("declined", "card declined")
        assert len(charge["attempts"]) == 1
        assert done[declined]["steps"]["notify"]["status"] == "blocked"
    await recorder.stop()
    recorder.assert_valid()  # every result and progress the worker sent fits its schema
    outputs = [r["output"] for r in recorder.heard["result"] if r["step"] == "charge" and r["ok"]]
    assert sorted(o["receipt"] for o in outputs) == ["r-12", "r-7"]
    assert {o["worker"] for o in outputs} == {language}
