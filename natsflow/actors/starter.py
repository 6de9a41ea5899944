"""Starting an execution: the one use case behind every way a workflow starts."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.actors.jetstream.idempotency import IdempotencyKeys
from natsflow.actors.jetstream.publisher import Publisher
from natsflow.actors.jetstream.topology import inbox_subject
from natsflow.code.ids import app_of, code_execution_id
from natsflow.events.errors import InputError, InvalidInput, NotFound
from natsflow.events.ids import ENTROPY_BYTES, new_execution_id
from natsflow.events.messages import Start, json_encoder
from natsflow.events.model import ParentLink, TriggerInfo
from natsflow.events.views import ExecutionSummary, Started
from natsflow.manifests.inputs import InputSchema
from natsflow.manifests.schema import Workflow
from natsflow.manifests.starting import start_key


class Starter:
    """Start an execution of the latest deployed version of a workflow.

    Every way in goes through ``start``: the admin API and HTTP today, and
    trigger subjects, cron schedules and child workflows (the ``workflow``
    action) as they are added, so that all of them pin versions, honour
    ``enabled`` and deduplicate by idempotency key in the same way.

    ``summaries(execution)`` reads an execution's summary (None before it has
    started), so a repeated key costs a read, not a start message.

    ``start`` pins the latest version (an execution keeps it through any
    redeploy), refuses a disabled workflow, refuses an input that breaks the
    version's ``input`` JSON Schema (``InvalidInput`` listing every problem,
    before anything is claimed or published), takes the idempotency key (the
    caller's, else the manifest's template rendered over the input), claims it
    in KV, and publishes ``Start`` to the execution's inbox with
    ``Nats-Msg-Id: start:<id>``. Time and randomness come from ``clock`` and
    ``entropy`` (``time.time`` and ``os.urandom`` unless a test passes others).
    """

    def __init__(
        self,
        definitions: Definitions,
        publisher: Publisher,
        keys: IdempotencyKeys,
        summaries: Callable[[str], Awaitable[ExecutionSummary | None]],
        *,
        clock: Callable[[], float] = time.time,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._definitions = definitions
        self._publisher = publisher
        self._keys = keys
        self._summaries = summaries
        self._clock = clock
        self._entropy = entropy
        # (workflow, version) -> its compiled input schema: versions never change, so a
        # schema is compiled once per version, not per start.
        self._schemas: dict[tuple[str, str], InputSchema] = {}

    async def start(
        self,
        workflow: str,
        input: Any,
        idempotency_key: str | None,
        *,
        trigger: Mapping[str, Any] | None = None,
    ) -> Started:
        """Start ``workflow`` with ``input``; with a key already claimed, the execution that
        claimed it (``created=False``) instead of a new one.

        ``trigger`` (a trigger message's ``subject`` and ``headers``) is what the
        manifest's key template sees besides the input. Raises ``NotFound`` (not
        deployed), ``InvalidInput`` (the input breaks the workflow's input schema),
        ``InputError`` (disabled, or a key template that does not fit the input) and
        ``Unavailable`` (NATS down: safe to retry with the same key).
        """
        version, definition = await self._definitions.latest(workflow)
        if not definition.enabled:
            raise InputError(f"workflow {workflow!r} is disabled (enabled: false)")
        self.check_input(version, definition, input)
        key = start_key(definition, input, idempotency_key, trigger)
        execution = new_execution_id(workflow, self._clock(), self._entropy(ENTROPY_BYTES))
        if definition.app is not None:  # a code workflow: its app's processes run it
            execution = code_execution_id(definition.app, execution)
        created = True
        if key is not None:
            execution, created = await self._keys.claim(workflow, key, execution)
        if not created and (summary := await self._summaries(execution)) is not None:
            # Started already: the version is the one it pinned then, not today's latest.
            return Started(
                execution_id=execution, workflow=workflow, version=summary.version, created=False
            )
        # A key claimed before whose execution has not started: that start may have been
        # claimed but never published (NATS went away in between), so this one publishes
        # it; the server drops a copy of one that was (Nats-Msg-Id).
        start = Start(
            workflow=workflow,
            version=version,
            input=input,
            idempotency_key=key,
            trigger=TriggerInfo(**trigger) if trigger is not None else None,
        )
        await self._publisher.publish(
            inbox_subject(execution),
            json_encoder.encode(start),
            {"Nats-Msg-Id": f"start:{execution}"},
        )
        return Started(execution_id=execution, workflow=workflow, version=version, created=created)

    def check_input(self, version: str, definition: Workflow, input: Any) -> None:
        """Raise ``InvalidInput`` listing every way ``input`` breaks the version's schema."""
        if definition.input is None:
            return
        schema = self._schemas.get((definition.name, version))
        if schema is None:
            schema = self._schemas[(definition.name, version)] = InputSchema(definition.input)
        problems = schema.problems(input)
        if problems:
            raise InvalidInput(
                f"invalid input for workflow {definition.name!r} (version {version})", problems
            )

    async def start_child(
        self, workflow: str, input: Any, execution: str, parent: ParentLink
    ) -> Started:
        """Start ``workflow`` as the child ``execution`` (an id derived from ``parent``:
        ``natsflow.events.ids.child_execution_id``) of ``parent``'s ``workflow`` step.

        Pins the latest version, as ``start`` does, and refuses a workflow not deployed
        (``NotFound``), disabled (``InputError``) or an input that breaks its schema
        (``InvalidInput``). The id is the deduplication: no idempotency key is claimed;
        a child that has a summary started already (``created=False``), and a ``Start``
        sent again carries the same ``Nats-Msg-Id: start:<id>``.
        """
        existing = await self._summaries(execution)
        if existing is not None:
            return Started(
                execution_id=execution, workflow=workflow, version=existing.version, created=False
            )
        version, definition = await self._definitions.latest(workflow)
        if definition.app is not None and app_of(execution) is None:
            # A code app's workflow: its id routes to the app (a manifest parent's pure
            # decider named it without the prefix; ``is_routed_child`` matches it).
            execution = code_execution_id(definition.app, execution)
            existing = await self._summaries(execution)
            if existing is not None:
                return Started(
                    execution_id=execution,
                    workflow=workflow,
                    version=existing.version,
                    created=False,
                )
        if not definition.enabled:
            raise InputError(f"workflow {workflow!r} is disabled (enabled: false)")
        self.check_input(version, definition, input)
        start = Start(workflow=workflow, version=version, input=input, parent=parent)
        await self._publisher.publish(
            inbox_subject(execution),
            json_encoder.encode(start),
            {"Nats-Msg-Id": f"start:{execution}"},
        )
        return Started(execution_id=execution, workflow=workflow, version=version, created=True)

    async def routed_child(self, child: str, workflow: str | None) -> str:
        """Where a child recorded as ``child`` lives: ``<app>==<child>`` when ``workflow``
        is (now) a code app's (as ``start_child`` routed it), else ``child``."""
        if workflow is None or app_of(child) is not None:
            return child
        try:
            _, definition = await self._definitions.latest(workflow)
        except NotFound:
            return child
        return code_execution_id(definition.app, child) if definition.app else child
