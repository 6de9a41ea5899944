"""Roles that NATS enforces: the permissions each kind of natsflow user needs, and no more.

Pure: ``permissions(role, ...)`` says what a role may publish and subscribe to;
``user_block`` renders one user of a nats-server config (``authorization { users
[...] }``) and ``example_config`` a whole one (``nats/roles.conf`` is its output, a
test keeps the two equal). ``natsflow auth`` prints them.

- ``service``: natsflow itself (``serve``, ``worker``). It publishes to any subject
  (``nats.request`` steps name any subject, trigger replies go to callers' inboxes)
  and subscribes to any (``wait`` steps listen on any subject), so it gets ``>``.
- ``worker`` of a set of custom actions: pull its tasks from each action's consumer
  ``natsflow-action-<action>`` on NATSFLOW_TASKS, ack them, publish results and
  progress on ``natsflow.result.>``, hear cancel notices. It cannot publish to an
  inbox (start, cancel, signal...), read other actions' tasks or create consumers.
- ``trigger`` publisher: publish to its trigger subjects only (and get the
  stream's acknowledgement and the trigger reply on its own inbox).
- ``operator``: the whole admin API ``natsflow.api.>`` and ``$SRV.>``; reads the
  event feed, and watches an execution's events and summary (``watch``, ``start
  --wait``) through ordered consumers.
- ``app``: the process of a code app (``natsflow worker --app M``, ``natsflow.Worker``):
  see ``_app``.
- ``viewer``: the read-only admin verbs (``READ_VERBS``) and what ``operator``
  reads; no verb that changes anything.

Every role subscribes to ``_INBOX.>`` for replies (nats-py's and nats.js's default
inbox prefix). On a server shared with other applications, give each user its own
inbox prefix instead (``inbox_prefix`` in nats-py) and narrow that line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, get_args

import msgspec

from natsflow.actors.jetstream.action_queues import action_consumer
from natsflow.actors.jetstream.topology import (
    APP_PREFIX,
    CANCEL_SUBJECTS,
    EVENTS_STREAM,
    EXECUTIONS_BUCKET,
    INBOX_STREAM,
    RESULT_SUBJECTS,
    TASKS_STREAM,
    WORKFLOWS_BUCKET,
    app_consumer,
    app_steps_consumer,
    task_subject,
)
from natsflow.code.definition import step_action
from natsflow.events.errors import InputError
from natsflow.manifests.actions import ACTIONS
from natsflow.manifests.custom import custom_action_problem
from natsflow.service.protocol import API_PREFIX, REQUEST_TYPES

Role = Literal["service", "worker", "trigger", "operator", "viewer", "app"]
ROLES: tuple[str, ...] = get_args(Role)

READ_VERBS = frozenset(
    {"ls", "stats", "show", "history", "workflows", "triggers", "dlq.ls", "dlq.show"}
)
"""The admin verbs that change nothing: a viewer may call these. Every other verb in
``REQUEST_TYPES`` changes something (a test checks that each verb is decided)."""

FEED_SUBJECTS = "natsflow.feed.>"
FEED_PREFIX = "natsflow.feed."
"""The event feed (``natsflow.feed.<workflow>.<execution>``, issue 10's open contract)."""

REPLIES = "_INBOX.>"


def redacted(url: str) -> str:
    """``url`` (comma-separated NATS URLs) with any password replaced by ``***``, for logs."""
    return ",".join(re.sub(r"^(\w+://[^:/@]*):[^@/]*@", r"\1:***@", u) for u in url.split(","))


OPEN_EMBEDDED = (
    "the embedded nats-server is open: no authentication, listening on loopback"
    " (127.0.0.1) only; for roles enforced by NATS run your own server with users"
    " (natsflow auth, nats/roles.conf) and set NATS_URL"
)


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What a role may publish and subscribe to (nats-server allow lists)."""

    role: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    about: str


def permissions(
    role: str,
    *,
    actions: Sequence[str] = (),
    subjects: Sequence[str] = (),
    app: str = "",
    steps: Sequence[str] = (),
    workflows: Sequence[str] = (),
) -> Permissions:
    """The permissions of ``role``: ``actions`` for a worker, ``subjects`` for a trigger
    publisher, ``app`` with its ``steps`` and ``workflows`` for a code app's process. Raises ``InputError``
    naming what is missing or wrong."""
    match role:
        case "app":
            return _app(app, steps, workflows)
        case "service":
            return Permissions(
                role=role,
                publish=(">",),
                subscribe=(">",),
                about="natsflow service and `natsflow worker` processes: every subject",
            )
        case "worker":
            return _worker(actions)
        case "trigger":
            return _trigger(subjects)
        case "operator":
            return Permissions(
                role=role,
                publish=(f"{API_PREFIX}.>", "$SRV.>", *_watching()),
                subscribe=(REPLIES, FEED_SUBJECTS),
                about="operator: the whole admin API (deploy, start, cancel, signal, dlq ...)",
            )
        case "viewer":
            verbs = tuple(f"{API_PREFIX}.{verb}" for verb in sorted(READ_VERBS))
            return Permissions(
                role=role,
                publish=(*verbs, "$SRV.>", *_watching()),
                subscribe=(REPLIES, FEED_SUBJECTS),
                about="viewer: read-only admin verbs (" + ", ".join(sorted(READ_VERBS)) + ")",
            )
    raise InputError(f"role: {role!r} is not one of {', '.join(ROLES)}")


def _worker(actions: Sequence[str]) -> Permissions:
    if not actions:
        raise InputError("worker: name the actions it serves (--actions billing.charge,...)")
    publish = [RESULT_SUBJECTS]
    for action in actions:
        if action in ACTIONS:
            raise InputError(
                f"worker: {action!r} is a built-in action, served by natsflow's own workers"
                " (role service); a worker role serves custom actions"
            )
        if (problem := custom_action_problem(action)) is not None:
            raise InputError(f"worker: {action!r} is not a custom action name: {problem}")
        consumer = action_consumer(action)
        publish += [
            f"$JS.API.CONSUMER.INFO.{TASKS_STREAM}.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{TASKS_STREAM}.{consumer}",
            f"$JS.ACK.{TASKS_STREAM}.{consumer}.>",
        ]
    served = ", ".join(f"{a} ({task_subject(a)})" for a in actions)
    return Permissions(
        role="worker",
        publish=tuple(publish),
        subscribe=(REPLIES, CANCEL_SUBJECTS),
        about=f"worker of {served}: pull its tasks, ack them, publish results and progress",
    )


def _trigger(subjects: Sequence[str]) -> Permissions:
    if not subjects:
        raise InputError("trigger: name the trigger subjects it publishes to (--subjects ...)")
    for subject in subjects:
        if subject.startswith(("natsflow.", "$", "_INBOX")) or not subject or " " in subject:
            raise InputError(f"trigger: {subject!r} is not a trigger subject")
    return Permissions(
        role="trigger",
        publish=tuple(subjects),
        subscribe=(REPLIES,),
        about="trigger publisher of " + ", ".join(subjects),
    )


def _app(app: str, steps: Sequence[str], workflows: Sequence[str]) -> Permissions:
    """A code app's process: its executions' actors and its steps' workers.

    It pulls (and acks) its own two consumers, ``natsflow-app-<app>`` (its inbox and
    results, ``natsflow.app.<app>.>``, which it also publishes to: a step's result, a
    timer's target) and ``natsflow-app-<app>-steps`` (its steps' tasks), creating or
    updating them at start; deploys its workflows (the workflows bucket); and writes
    what an execution's actor writes. Execution ids are one subject token, and NATS
    wildcards match whole tokens, so the events, snapshots, summaries and timers of
    "this app's executions only" cannot be said: those lines name any execution's.
    The same holds for the service's inbox ``natsflow.in.*``, needed for children of the
    other kind (a manifest child's start, a manifest parent's ``child_ended``). Not
    allowed: other apps' consumers and inboxes (so no code child in another app), the
    admin API, the service's consumers, other actions' tasks, the dead letters."""
    if not app or (problem := custom_action_problem(f"{app}.step")) is not None or "." in app:
        raise InputError(f"app: {app!r} is not an app name (--app NAME): {problem or 'a dot'}")
    if not workflows:
        raise InputError(f"app: app {app} has no @workflow (--app MODULE)")
    publish = [f"{APP_PREFIX}{app}.>"]
    for stream, consumer in (
        (INBOX_STREAM, app_consumer(app)),
        (TASKS_STREAM, app_steps_consumer(app)),
    ):
        publish += [
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
            f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>",
        ]
    publish += [task_subject(step_action(app, step)) for step in steps]
    publish += [f"{FEED_PREFIX}{workflow}.*.*" for workflow in workflows]
    publish += [
        # A child of the other kind: a manifest child's start, a manifest parent's
        # child_ended (the service's inbox; ids are one token, so any execution's).
        "natsflow.in.*",
        "natsflow.ev.*",
        "natsflow.snap.*",
        "natsflow.sched.*.*",
        f"$KV.{EXECUTIONS_BUCKET}.*",
        f"$KV.{WORKFLOWS_BUCKET}.>",
        f"$JS.API.STREAM.INFO.KV_{WORKFLOWS_BUCKET}",
        f"$JS.API.DIRECT.GET.KV_{WORKFLOWS_BUCKET}.>",
        f"$JS.API.STREAM.INFO.KV_{EXECUTIONS_BUCKET}",
        f"$JS.API.DIRECT.GET.KV_{EXECUTIONS_BUCKET}.>",
        f"$JS.API.DIRECT.GET.{EVENTS_STREAM}",
    ]
    return Permissions(
        role="app",
        publish=tuple(publish),
        subscribe=(REPLIES, CANCEL_SUBJECTS),
        about=f"code app {app} (natsflow worker --app): its consumers, executions and steps",
    )


def _watching() -> tuple[str, ...]:
    """What ``watch`` (an ordered consumer of an execution's events) and ``start --wait``
    (a watch of its summary in the executions bucket) need: ephemeral consumers on
    those two streams, and their flow control replies."""
    allowed: list[str] = []
    for stream in (EVENTS_STREAM, f"KV_{EXECUTIONS_BUCKET}"):
        allowed += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.FC.{stream}.>",
        ]
    return tuple(allowed)


def user_block(user: str, password: str, perms: Permissions) -> str:
    """One entry of ``authorization { users = [ ... ] }`` in nats-server's config syntax."""

    def allow(subjects: tuple[str, ...]) -> str:
        return ", ".join(json.dumps(s) for s in subjects)

    return (
        f"    # {perms.about}\n"
        f"    {{\n"
        f"      user: {json.dumps(user)}, password: {json.dumps(password)}\n"
        f"      permissions: {{\n"
        f"        publish: {{ allow: [{allow(perms.publish)}] }}\n"
        f"        subscribe: {{ allow: [{allow(perms.subscribe)}] }}\n"
        f"      }}\n"
        f"    }}\n"
    )


EXAMPLE_USERS: tuple[tuple[str, str, Permissions], ...] = (
    ("natsflow", "service-secret", permissions("service")),
    ("billing", "worker-secret", permissions("worker", actions=["billing.charge"])),
    ("shop", "trigger-secret", permissions("trigger", subjects=["shop.orders.>"])),
    ("ops", "operator-secret", permissions("operator")),
    ("dashboard", "viewer-secret", permissions("viewer")),
    (
        "docs",
        "app-secret",
        permissions("app", app="docs", steps=["fetch", "publish"], workflows=["sync_docs"]),
    ),
)


def example_config(users: Sequence[tuple[str, str, Permissions]] = EXAMPLE_USERS) -> str:
    """A whole nats-server config with one user per role (``nats/roles.conf``)."""
    blocks = "".join(user_block(*user) for user in users)
    return (
        "# natsflow roles enforced by NATS: one user per role, in one account.\n"
        "# Generated by `natsflow auth --example`; print one role's entry with\n"
        "# `natsflow auth --role worker --actions billing.charge --user billing`.\n"
        "# Change the passwords (or use `nats server passwd` bcrypt hashes).\n"
        "# Run: nats-server -js -c nats/roles.conf; then NATS_URL=nats://natsflow:...@host:4222\n"
        "jetstream: enabled\n"
        "authorization {\n"
        "  users = [\n"
        f"{blocks}"
        "  ]\n"
        "}\n"
    )


WRITE_VERBS = frozenset(
    {
        "deploy",
        "start",
        "cancel",
        "signal",
        "resume",
        "pause",
        "unpause",
        "dlq.redrive",
        "dlq.purge",
    }
)
"""The admin verbs that change something: an operator's only."""


def unclassified_verbs() -> list[str]:
    """Admin verbs that neither ``READ_VERBS`` nor the write list name (must be none)."""
    return sorted(v for v in REQUEST_TYPES if v not in READ_VERBS and v not in WRITE_VERBS)


def add_auth_parser(sub: Any) -> None:
    """``natsflow auth``: print a role's user entry for nats-server's config."""
    a = sub.add_parser("auth", help="print the NATS permissions of a role (nats-server config)")
    a.add_argument("--role", choices=ROLES, help=", ".join(ROLES))
    a.add_argument("--actions", default="", help="worker: the custom actions it serves (a,b)")
    a.add_argument("--subjects", default="", help="trigger: the subjects it publishes to (a,b)")
    a.add_argument(
        "--app", action="append", default=[], help="app: its module, as for worker --app"
    )
    a.add_argument("--app-name", help="app: its name (default: the module's NATSFLOW_APP)")
    a.add_argument("--user", help="the user name (default: the role)")
    a.add_argument("--password", default="CHANGE-ME", help="the password to write")
    a.add_argument("--example", action="store_true", help="a whole config, one user per role")
    a.add_argument("--json", action="store_true", help="the permissions as JSON")


def auth_text(args: Any) -> str:
    """What ``natsflow auth`` prints for its parsed arguments."""
    if args.example:
        return example_config()
    if args.role is None:
        raise InputError("auth: --role (or --example) is required")
    app = _code_app(args) if args.role == "app" else None
    perms = permissions(
        args.role,
        actions=_listed(args.actions),
        subjects=_listed(args.subjects),
        app=app.name if app else "",
        steps=sorted(app.steps) if app else (),
        workflows=sorted(app.workflows) if app else (),
    )
    if args.json:
        return msgspec.json.encode(perms).decode()
    return user_block(args.user or args.role, args.password, perms)


def _code_app(args: Any) -> Any:
    """The code app of ``--app MODULE`` (imported as ``natsflow worker --app`` does)."""
    if not args.app:
        raise InputError("app: name the app's module (--app myapp.workflows)")
    import os
    import sys

    from natsflow.code.definition import load_app

    sys.path.insert(0, os.getcwd())
    return load_app(list(args.app), args.app_name)


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
