"""The role generator: what each role may publish and subscribe to (``natsflow auth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from natsflow.events.errors import InputError
from natsflow.service.cli import main
from natsflow.service.protocol import REQUEST_TYPES
from natsflow.service.roles import (
    READ_VERBS,
    WRITE_VERBS,
    example_config,
    permissions,
    unclassified_verbs,
)

ROLES_CONF = Path(__file__).parents[2] / "nats" / "roles.conf"


def test_every_admin_verb_is_either_read_only_or_a_change() -> None:
    assert unclassified_verbs() == []
    assert not READ_VERBS & WRITE_VERBS
    assert set(REQUEST_TYPES) == READ_VERBS | WRITE_VERBS


def test_a_worker_pulls_only_its_own_actions_and_publishes_only_results() -> None:
    perms = permissions("worker", actions=["billing.charge"])
    assert perms.publish == (
        "natsflow.result.>",
        "$JS.API.CONSUMER.INFO.NATSFLOW_TASKS.natsflow-action-billing_charge",
        "$JS.API.CONSUMER.MSG.NEXT.NATSFLOW_TASKS.natsflow-action-billing_charge",
        "$JS.ACK.NATSFLOW_TASKS.natsflow-action-billing_charge.>",
    )
    assert perms.subscribe == ("_INBOX.>", "natsflow.cancel.*")
    assert not any(
        s.startswith(("natsflow.in", "natsflow.api", "natsflow.task")) for s in perms.publish
    )


def test_a_viewer_gets_read_verbs_only_and_an_operator_all() -> None:
    viewer = permissions("viewer")
    verbs = {
        s.removeprefix("natsflow.api.") for s in viewer.publish if s.startswith("natsflow.api.")
    }
    assert verbs == READ_VERBS
    assert "natsflow.feed.>" in viewer.subscribe
    assert "natsflow.api.>" in permissions("operator").publish


def test_a_trigger_publisher_publishes_only_its_subjects() -> None:
    perms = permissions("trigger", subjects=["shop.orders.>"])
    assert (perms.publish, perms.subscribe) == (("shop.orders.>",), ("_INBOX.>",))


@pytest.mark.parametrize(
    ("role", "kwargs", "says"),
    [
        ("worker", {}, "name the actions"),
        ("worker", {"actions": ["shell"]}, "'shell' is a built-in action"),
        ("worker", {"actions": ["a.>"]}, "not a custom action name"),
        ("trigger", {}, "name the trigger subjects"),
        ("trigger", {"subjects": ["natsflow.in.x"]}, "not a trigger subject"),
        ("root", {}, "'root' is not one of service, worker"),
    ],
)
def test_a_wrong_request_is_refused_with_a_reason(
    role: str, kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(InputError, match=says):
        permissions(role, **kwargs)


def test_the_shipped_example_is_what_the_generator_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ROLES_CONF.read_text() == example_config()
    main(["auth", "--example"])
    assert capsys.readouterr().out == example_config()


def test_auth_prints_one_users_entry(capsys: pytest.CaptureFixture[str]) -> None:
    main(["auth", "--role", "worker", "--actions", "billing.charge", "--user", "billing"])
    out = capsys.readouterr().out
    assert 'user: "billing", password: "CHANGE-ME"' in out
    assert '"$JS.ACK.NATSFLOW_TASKS.natsflow-action-billing_charge.>"' in out


def test_an_app_pulls_only_its_own_consumers_and_publishes_to_its_own_subjects() -> None:
    perms = permissions("app", app="docs", steps=["fetch"], workflows=["sync_docs"])
    assert "natsflow.app.docs.>" in perms.publish
    assert "$JS.API.CONSUMER.MSG.NEXT.NATSFLOW_INBOX.natsflow-app-docs" in perms.publish
    assert "$JS.API.CONSUMER.MSG.NEXT.NATSFLOW_TASKS.natsflow-app-docs-steps" in perms.publish
    assert "natsflow.task.docs_fetch" in perms.publish
    assert "natsflow.feed.sync_docs.*.*" in perms.publish
    assert not any(s.startswith(("natsflow.api", "natsflow.app.>", "$SRV")) for s in perms.publish)
    assert not any("natsflow-actors" in s or "natsflow-workers" in s for s in perms.publish)
    with pytest.raises(InputError, match="no @workflow"):
        permissions("app", app="docs", steps=["fetch"])
    with pytest.raises(InputError, match="not an app name"):
        permissions("app", app="a.b", workflows=["w"])


def test_auth_prints_an_apps_entry_from_its_module(capsys: pytest.CaptureFixture[str]) -> None:
    main(["auth", "--role", "app", "--app", "tests.integration.code_app"])
    out = capsys.readouterr().out
    assert '"$JS.API.CONSUMER.MSG.NEXT.NATSFLOW_TASKS.natsflow-app-itest-steps"' in out
    assert '"natsflow.task.itest_fetch"' in out
