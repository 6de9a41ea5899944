"""The golden-history file format, read by the tests and written by ``record``.

One JSON file per example workflow, ``tests/histories/<workflow>.json``::

    {"format": 1, "workflow": "dag", "version": "<manifest hash>",
     "manifest": <the manifest as deployed, as the definitions store keeps it>,
     "execution_id": "...",
     "decisions": [{"message": <inbox message>, "now": <seconds>, "events": [...]}, ...],
     "final_state": <the state after the last decision>}

Messages and events keep their ``kind`` / ``type`` tags, so the file decodes
back into the same structs. The manifest is stored as deployed, so a history
replays against the plan it was recorded with, whatever later edits to the
example files (the tests also replay it against the current example).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from natsflow.events.model import ExecutionState
from natsflow.events.replay import RecordedDecision
from natsflow.manifests.loader import decode_workflow
from natsflow.manifests.schema import Workflow

FORMAT = 1
HERE = Path(__file__).parent
EXAMPLES = HERE.parents[1] / "manifests" / "examples"


class History(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded execution of one workflow version (see the module docstring)."""

    format: int
    workflow: str
    version: str
    manifest: msgspec.Raw
    execution_id: str
    decisions: tuple[RecordedDecision, ...]
    final_state: ExecutionState
    app: str | None = None  # a code workflow: the app's module (its decider is the code)

    def deployed(self) -> Workflow:
        """The manifest the history was recorded with, decoded as a stored definition."""
        return decode_workflow(bytes(self.manifest))


_decoder = msgspec.json.Decoder(History)


def path_of(workflow: str) -> Path:
    return HERE / f"{workflow}.json"


def code_path_of(workflow: str) -> Path:
    return HERE / "code" / f"{workflow}.json"


def read(path: Path) -> History:
    history = _decoder.decode(path.read_bytes())
    if history.format != FORMAT:
        raise ValueError(f"{path}: history format {history.format}, this code reads {FORMAT}")
    return history


def encode(history: History) -> bytes:
    """The file's bytes, the same for the same history: one line per message and per
    event (a re-recording's diff shows which decisions changed), the manifest and the
    final state indented."""
    entries = [
        b'"format": ' + _json(history.format),
        b'"workflow": ' + _json(history.workflow),
        b'"version": ' + _json(history.version),
        b'"execution_id": ' + _json(history.execution_id),
        b'"manifest": ' + _indented(bytes(history.manifest)),
        b'"decisions": [\n' + b",\n".join(map(_decision, history.decisions)) + b"\n ]",
        b'"final_state": ' + _indented(_json(history.final_state)),
    ]
    if history.app is not None:
        entries.insert(4, b'"app": ' + _json(history.app))
    return b"{\n " + b",\n ".join(entries) + b"\n}\n"


_json = msgspec.json.encode


def _indented(data: bytes) -> bytes:
    return msgspec.json.format(data, indent=1).replace(b"\n", b"\n ")


def _decision(decision: RecordedDecision) -> bytes:
    head = b'  {"message": ' + _json(decision.message) + b', "now": ' + _json(decision.now)
    if not decision.events:
        return head + b', "events": []}'
    events = b",\n".join(b"   " + _json(event) for event in decision.events)
    return head + b', "events": [\n' + events + b"]}"


def recorded_files() -> list[Path]:
    return sorted(HERE.glob("*.json"))
