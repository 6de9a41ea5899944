"""A custom action whose task subject another consumer already takes (a code app's steps
are the custom actions ``<app>.<step>``) is refused at deploy with a reason naming it."""

from __future__ import annotations

import pytest
from nats.js import api

from natsflow.actors.jetstream.topology import TASKS_STREAM, app_steps_consumer, task_subject
from natsflow.code.definition import step_action
from natsflow.events.errors import Conflict
from natsflow.service.embedded import EmbeddedServer
from tests.integration.harness import running

MANIFEST = """
name: pay
steps:
  fetch: {action: docs.fetch}
"""


async def test_a_custom_action_that_is_a_code_apps_step_is_refused_naming_it(
    nats_server: EmbeddedServer,
) -> None:
    async with running(nats_server, workers=0) as engine:
        # What a code app "docs" with a step "fetch" provisions when its process starts.
        await engine.nc.jetstream().add_consumer(
            TASKS_STREAM,
            api.ConsumerConfig(
                durable_name=app_steps_consumer("docs"),
                filter_subjects=[task_subject(step_action("docs", "fetch"))],
                ack_policy=api.AckPolicy.EXPLICIT,
            ),
        )
        with pytest.raises(Conflict, match=r"docs\.fetch.*natsflow\.task\.docs_fetch"):
            await engine.client.deploy(MANIFEST, "yaml", "pay.yaml")
        assert [w.workflow for w in await engine.client.workflows()] == []
