"""The open contract: JSON Schemas (draft 2020-12) of the messages natsflow exchanges.

One source of truth: each schema is generated from the msgspec struct natsflow
itself encodes or decodes with (``msgspec.json.schema``), plus the few
constraints msgspec cannot express (``_EXTRA``). The files ship in the
repository and in the package (``natsflow/service/schemas/NAME.json``), are
printed by ``natsflow schema NAME``, and a unit test keeps them equal to what
this module generates. Regenerate them with ``make schemas``
(``python -m natsflow.service.contract --write``).
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from natsflow.events.feed import FeedMessage
from natsflow.events.messages import CancelNotice, Progress, Result, Task
from natsflow.events.refusals import Refusal
from natsflow.events.replies import TriggerReply
from natsflow.service.protocol import SignalRequest

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS_DIR = Path(__file__).with_name("schemas")

# name -> (struct, summary, where it travels and who sends it)
MESSAGES: dict[str, tuple[type[msgspec.Struct], str, str]] = {
    "task": (
        Task,
        "A step attempt for a worker (natsflow.task.<action>)",
        "natsflow publishes it to the JetStream subject "
        "natsflow.task.<action> (dots in the action become underscores); the worker "
        "answers on reply_to.",
    ),
    "result": (
        Result,
        "A worker's answer to one attempt (to the task's reply_to)",
        "Published to the task's reply_to: output when "
        "ok, else error. A result that names its step and attempt but breaks this schema "
        "fails that attempt (error kind invalid_result, retried per the step's policy).",
    ),
    "progress": (
        Progress,
        "A worker's progress report (to the task's reply_to)",
        "Published to the task's reply_to; it also keeps a heartbeat alive.",
    ),
    "trigger-reply": (
        TriggerReply,
        "natsflow's answer to a trigger message (to its Natsflow-Reply-To)",
        "Sent for a trigger message published with the header "
        "Natsflow-Reply-To: the execution it started, or why it was refused.",
    ),
    "cancel-notice": (
        CancelNotice,
        "Stop an execution's running steps (natsflow.cancel.<execution>)",
        "Told to every worker (core NATS, natsflow.cancel.<execution>) when an execution "
        "is cancelled: stop running these steps; their results are not awaited.",
    ),
    "signal": (
        SignalRequest,
        "A signal for an execution (natsflow.api.signal)",
        "A signal for a running execution, sent as a request to the admin API "
        "(natsflow.api.signal); the only way in for signals.",
    ),
    "feed": (
        FeedMessage,
        "One event of one execution (natsflow.feed.<workflow>.<execution>.<type>)",
        "One stored event of one execution, published (core NATS, at most once) on "
        "natsflow.feed.<workflow>.<execution>.<event type>.",
    ),
    "refusal": (
        Refusal,
        "Why a worker's message was refused (to its Natsflow-Reply-To)",
        "Told to a worker (its Natsflow-Reply-To header) whose result or progress "
        "message did not match its schema: why, and what natsflow did instead.",
    ),
}

# A subject natsflow can publish to: dot-separated tokens, no wildcard, no white space.
_SUBJECT = r"^[^\s.*>]+(\.[^\s.*>]+)*$"

# What msgspec cannot say, merged into the named struct's definition.
_EXTRA: dict[str, dict[str, Any]] = {
    "task": {"properties": {"reply_to": {"pattern": _SUBJECT}}},
    # either the execution started (or found) or why not
    "trigger-reply": {"anyOf": [{"required": ["execution_id"]}, {"required": ["error"]}]},
    "refusal": {"properties": {"outcome": {"enum": ["attempt_failed", "dead_lettered"]}}},
}


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema of message ``name`` (a key of ``MESSAGES``), as generated."""
    struct, summary, detail = MESSAGES[name]
    generated = msgspec.json.schema(struct)
    definitions: dict[str, Any] = generated.get("$defs", {})
    ref = generated.get("$ref", "")
    main = definitions[ref.rsplit("/", 1)[-1]] if ref else generated
    for key, value in _EXTRA.get(name, {}).items():
        if key == "properties":
            for field, extra in value.items():
                main["properties"][field] = {**main["properties"][field], **extra}
        else:
            main[key] = value
    return {
        "$schema": DRAFT,
        "$id": f"urn:natsflow:schema:{name}",
        "title": f"natsflow {name} message",
        "description": f"{summary}. {detail}",
        **generated,
    }


def render(name: str) -> str:
    """``schema_of(name)`` as the text of its shipped file."""
    return json.dumps(schema_of(name), indent=2, sort_keys=False) + "\n"


def shipped(name: str) -> str:
    """The text of the schema file shipped with this package (``natsflow schema NAME``)."""
    if name not in MESSAGES:
        known = ", ".join(MESSAGES)
        raise KeyError(f"no schema named {name!r} (known: {known})")
    return (resources.files("natsflow.service") / "schemas" / f"{name}.json").read_text()


def main(argv: list[str] | None = None) -> int:
    """``--write``: regenerate the shipped files; ``--check``: exit 1 if any drifted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for name in MESSAGES:
        path = SCHEMAS_DIR / f"{name}.json"
        text = render(name)
        if args.write:
            SCHEMAS_DIR.mkdir(exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(str(path))
    if stale:
        print("out of date (make schemas): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
