"""Where the parts of issue 9 meet, against a real nats-server: resume of a child and
of its parent (a review's findings, each pinned)."""

from __future__ import annotations

from pathlib import Path

from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import running


def _gated_child(gate: Path) -> str:
    # fails until the gate file exists, then waits for the signal "go"
    return f"""
name: gated-child
steps:
  gate:
    action: shell
    with: {{argv: [python3, -c, "import os, sys; sys.exit(0 if os.path.exists('{gate}') else 3)"]}}
  hold:
    action: wait
    needs: [gate]
    with: {{signal: go}}
output: "${{{{ steps.hold.output }}}}"
"""


PARENT = """
name: gated-parent
steps:
  run:
    action: workflow
    with: {workflow: gated-child}
output: "${{ steps.run.output }}"
"""


async def test_a_resumed_child_that_ends_again_tells_its_resumed_parent(
    nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    """The child fails (its parent fails with it), both are resumed, and the child then
    completes: its second report must reach the parent, not be dropped as a copy of the
    first (the same ``Nats-Msg-Id`` within the server's duplicate window)."""
    gate = tmp_path / "gate"
    async with running(nats_server) as engine:
        await engine.deploy(_gated_child(gate))
        await engine.deploy(PARENT)
        parent = await engine.start("gated-parent")
        assert (await engine.wait_done(parent))["status"] == "failed"
        child = f"{parent}=run"
        assert (await engine.wait_done(child))["status"] == "failed"
        gate.touch()
        await engine.client.resume(child)
        await engine.wait_for(child, ("running",), 10)
        await engine.client.resume(parent)  # its step goes on with the same child, running
        await engine.wait_for(parent, ("running",), 10)
        await engine.client.signal(child, "go", {"ok": True})
        assert (await engine.wait_done(child))["status"] == "completed"
        shown = await engine.wait_done(parent)
    assert shown["status"] == "completed", shown
    assert shown["output"] == {"ok": True}
