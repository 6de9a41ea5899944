"""Manifest validation: every problem, each as ``path: reason``, reported at once.

Validation runs in two passes over the decoded document (plain dicts and
lists). The structural pass (``manifests.structure``) walks the schema in
``manifests.schema`` field by field, converting durations to seconds and each
leaf with ``msgspec.convert``; the semantic pass (``manifests.checks``) checks
what types cannot say: step references, cycles, actions and their ``with``
keys (against the action catalogue), templates, the ``input`` JSON Schema
(``manifests.inputs``) and custom actions' contracts (``manifests.contracts``). Problems from every pass are raised together in one
``ManifestError``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from natsflow.events.errors import ManifestError
from natsflow.manifests.checks import check_semantics
from natsflow.manifests.contracts import check_contracts
from natsflow.manifests.inputs import check_input_schema
from natsflow.manifests.schema import Workflow
from natsflow.manifests.structure import Problems, check_struct, check_value, show

__all__ = ["check_struct", "check_value", "validate_document"]


def validate_document(doc: Any, source: str = "<manifest>") -> Workflow:
    """Validate a decoded manifest document and return the typed Workflow.

    Raises ManifestError listing every problem found, each as ``path: reason``.
    """
    problems: Problems = []
    if doc is None:
        raise ManifestError(source, ["(top level): the document is empty"])
    if not isinstance(doc, dict):
        raise ManifestError(
            source, [f"(top level): expected a mapping (name, steps, ...), got {show(doc)}"]
        )
    normalized = check_struct(Workflow, doc, "", problems)
    check_semantics(normalized, problems)
    if isinstance(normalized.get("input"), dict):  # else the structural pass said why
        problems.extend(check_input_schema(normalized["input"], "input"))
    check_contracts(normalized, problems)  # custom actions' input and output schemas
    if problems:
        raise ManifestError(source, list(dict.fromkeys(problems)))
    try:
        return msgspec.convert(normalized, Workflow)
    except msgspec.ValidationError as exc:  # pragma: no cover - the passes above cover it
        raise ManifestError(source, [f"(top level): {exc}"]) from None
