"""A code app's name is the namespace of its steps' actions (``<app>.<step>``)."""

from __future__ import annotations

import pytest

from natsflow.code.definition import CodeApp, step_action
from natsflow.manifests.actions import ACTIONS
from natsflow.manifests.custom import RESERVED_NAMESPACES


@pytest.mark.parametrize("name", RESERVED_NAMESPACES)
def test_an_app_may_not_take_natsflows_own_namespace(name: str) -> None:
    # An app "nats" with a step "request" had the action nats.request: its tasks went to
    # the built-in's subject, where natsflow's own workers ran them as nats.request.
    assert step_action(name, "request") in ACTIONS or name != "nats"
    with pytest.raises(ValueError, match=rf"app name {name!r}: .*reserved"):
        CodeApp(name)


def test_other_app_names_are_fine() -> None:
    assert CodeApp("docs").name == "docs"
    assert CodeApp("nats-tools").name == "nats-tools"


def test_a_code_workflows_triggers_are_checked_as_a_manifests() -> None:
    import pytest

    from natsflow.code.api import checked_triggers
    from natsflow.events.errors import ManifestError

    (every,) = checked_triggers("tick", [{"every": "30s"}])
    assert every.every == 30.0
    with pytest.raises(ManifestError, match=r"@workflow tick[\s\S]*triggers\[0\]\.cron"):
        checked_triggers("tick", [{"cron": "every tuesday-ish"}])
