"""Which decider runs an execution: chosen by its pinned workflow version.

The execution actor is given a ``DeciderSource`` and drives what
``get(workflow, version)`` returns through the ``Decider`` protocol; it never
knows the kind of workflow. ``Deciders`` serves manifest DAGs, the one kind
today; a second kind (code workflows) is a second source, or a branch here on
what the stored definition says it is.
"""

from __future__ import annotations

from typing import Protocol

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.events.decider import Decider
from natsflow.manifests.decider import ManifestDecider


class DeciderSource(Protocol):
    """Where the execution actor gets the decider of an execution's pinned version."""

    async def get(self, workflow: str, version: str) -> Decider:
        """The decider of ``workflow`` at ``version``; ``NotFound`` if it is not deployed."""
        ...

    def forget(self, execution: str) -> None:
        """Drop what a decider keeps of ``execution`` in memory (the actor passivated)."""
        ...


class Deciders:
    """Deciders by (workflow, version); versions never change, so they are kept."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions
        self._cache: dict[tuple[str, str], Decider] = {}

    async def get(self, workflow: str, version: str) -> Decider:
        """The decider of ``workflow`` at ``version``; ``NotFound`` if it is not deployed."""
        decider = self._cache.get((workflow, version))
        if decider is None:
            decider = ManifestDecider(await self._definitions.get(workflow, version))
            self._cache[(workflow, version)] = decider
        return decider

    def forget(self, execution: str) -> None:
        """Nothing to drop: a manifest decider keeps nothing per execution."""
