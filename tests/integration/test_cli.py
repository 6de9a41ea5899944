"""The real ``natsflow`` CLI, run as a subprocess against an in-process service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson

from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import Engine, natsflow_script, running

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"

INVALID = """
name: half-baked
steps:
  a:
    action: teleport
    needs: [ghost]
    retry: {attempts: 0}
  b:
    action: shell
    timeout: soon
"""
INVALID_PROBLEMS = (
    'steps.a.action: unknown action "teleport"',
    'steps.a.needs: unknown step "ghost"',
    "steps.a.retry.attempts: expected int >= 1",
    'steps.b.timeout: invalid duration "soon"',
    "steps.b.with.argv: required field missing",
)

# Each of these once deployed fine and failed only when a worker ran the step.
DRIFTS = """
name: drifts
steps:
  feed:
    action: shell
    with: {argv: [cat], stdin: {a: 1}}
  ask:
    action: nats.request
    with: {subject: svc.echo, timeout: 0}
"""
DRIFT_PROBLEMS = (
    'steps.feed.with.stdin: expected str, got {"a":1}',
    "steps.ask.with.timeout: expected duration > 0, got 0",
)
# ... and this one was refused at deploy although a worker accepts it.
LOWER_CASE_METHOD = """
name: lower-case-method
steps:
  fetch:
    action: http
    with: {url: "http://127.0.0.1:1/", method: get}
"""

FAILING = """
name: failing
steps:
  boom:
    action: python
    with: {function: always_fails}
"""


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)


async def natsflow(engine: Engine, *args: str) -> Run:
    """Run ``natsflow ARGS`` against the engine's server; its exit code and output."""
    env = {**os.environ, "NATS_URL": engine.url, "NATSFLOW_LOG_LEVEL": "WARNING"}
    # The code under test, even when the console script's install points at another tree.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    with anyio.fail_after(30):
        done = await anyio.run_process([natsflow_script(), *args], env=env, check=False)
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


async def test_invalid_manifest_exits_2_listing_every_problem(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "half-baked.yaml"
    manifest.write_text(INVALID)
    async with running(nats_server) as engine:
        run = await natsflow(engine, "deploy", str(manifest))
        listed = await natsflow(engine, "workflows", "--json")
    assert run.code == 2, run
    assert str(manifest) in run.err
    for problem in INVALID_PROBLEMS:
        assert problem in run.err, f"{problem!r} missing from:\n{run.err}"
    assert run.out == ""
    assert listed.code == 0, listed
    assert "half-baked" not in [w["workflow"] for w in listed.json()]


async def test_params_a_worker_would_refuse_exit_2_at_deploy(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    drifts, lower = tmp_path / "drifts.yaml", tmp_path / "lower-case-method.yaml"
    drifts.write_text(DRIFTS)
    lower.write_text(LOWER_CASE_METHOD)
    async with running(nats_server) as engine:
        refused = await natsflow(engine, "deploy", str(drifts))
        accepted = await natsflow(engine, "deploy", str(lower), "--json")
    assert refused.code == 2, refused
    for problem in DRIFT_PROBLEMS:
        assert problem in refused.err, f"{problem!r} missing from:\n{refused.err}"
    assert accepted.code == 0, accepted
    assert accepted.json()["workflow"] == "lower-case-method"


async def test_invalid_input_exits_2(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(EXAMPLES / "hello.yaml")
        run = await natsflow(engine, "start", "hello", "--input", "{name: Ada}")
        rows = await engine.ls()
    assert run.code == 2, run
    assert "--input: invalid JSON" in run.err
    assert "{name: Ada}" in run.err
    assert rows == []


async def test_deploy_then_start_and_wait_prints_the_output(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        deployed = await natsflow(engine, "deploy", str(EXAMPLES / "hello.yaml"), "--json")
        run = await natsflow(engine, "start", "hello", "--input", '{"name":"Ada"}', "--wait")
    assert deployed.code == 0, deployed
    assert deployed.json()["workflow"] == "hello"
    assert run.code == 0, run
    assert "status     completed" in run.out
    assert '"greeting": "Hello, Ada!"' in run.out


async def test_failing_workflow_with_wait_exits_1(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(FAILING)
        run = await natsflow(engine, "start", "failing", "--wait", "--json")
    assert run.code == 1, run
    shown = run.json()
    assert shown["status"] == "failed"
    assert shown["failed_step"] == "boom"
    assert "always_fails: attempt 1" in shown["error"]


async def test_read_verbs_with_and_without_json(nats_server: EmbeddedServer) -> None:
    # A long idle timeout: no passivation snapshot compacts the history under test.
    async with running(nats_server, actor_idle_timeout=60) as engine:
        await engine.deploy(EXAMPLES / "hello.yaml")
        execution = await engine.start("hello", {"name": "Ada"})
        await engine.wait_done(execution)
        verbs = {
            "show": ["show", execution],
            "history": ["history", execution],
            "ls": ["ls", "--workflow", "hello"],
            "ls_failed": ["ls", "--status", "failed", "--json"],
        }
        runs: dict[str, Run] = {}
        for name, args in verbs.items():  # one at a time: each run is CPU-bound start-up
            runs[name] = await natsflow(engine, *args)
            if "--json" not in args:
                runs[f"{name}_json"] = await natsflow(engine, *args, "--json")
    assert {name: r.code for name, r in runs.items() if r.code != 0} == {}

    shown = runs["show_json"].json()
    assert shown["execution_id"] == execution
    assert shown["status"] == "completed"
    assert shown["steps"]["greet"]["status"] == "completed"
    assert f"execution  {execution}" in runs["show"].out
    assert "status     completed   steps 1/1" in runs["show"].out
    assert "greet" in runs["show"].out

    events = runs["history_json"].json()["events"]
    types = [e["type"] for e in events]
    assert types[0] == "execution_started"
    assert types[-1] == "execution_completed"
    assert "step_completed" in types
    for kind in ("execution_started", "step_scheduled", "step_completed"):
        assert kind in runs["history"].out

    rows = runs["ls_json"].json()["executions"]
    assert [r["execution_id"] for r in rows] == [execution]
    assert rows[0]["status"] == "completed"
    assert runs["ls_failed"].json() == {"executions": []}
    assert execution in runs["ls"].out
    header = runs["ls"].out.splitlines()[0].split()
    assert header == ["EXECUTION", "WORKFLOW", "STATUS", "STARTED", "STEPS", "ERROR"]


async def test_show_of_an_unknown_execution_fails_clearly(nats_server: EmbeddedServer) -> None:
    async with running(nats_server) as engine:
        run = await natsflow(engine, "show", "hello-nope")
    assert run.code == 1, run
    assert "hello-nope" in run.err
    assert "not found" in run.err


WAITING = """
name: waiting
steps:
  approve:
    action: wait
    with: {signal: approve}
output: "${{ steps.approve.output }}"
"""


async def test_signal_resumes_a_wait_and_is_refused_once_it_ended(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server) as engine:
        await engine.deploy(WAITING)
        execution = await engine.start("waiting")
        bad = await natsflow(engine, "signal", execution, "approve", "--data", "{oops")
        sent = await natsflow(
            engine, "signal", execution, "approve", "--data", '{"ok": 1}', "--json"
        )
        done = await engine.wait_done(execution)
        late = await natsflow(engine, "signal", execution, "approve")
        unknown = await natsflow(engine, "signal", "waiting-nope", "approve")
    assert bad.code == 2, bad
    assert "--data: invalid JSON" in bad.err
    assert sent.code == 0, sent
    assert sent.json()["signal"] == "approve"
    assert done["output"] == {"ok": 1}
    assert late.code == 1, late
    assert f"execution {execution} is completed: a signal can only reach" in late.err
    assert unknown.code == 1, unknown
    assert "not found" in unknown.err
