"""Which decider runs an execution: chosen by its pinned workflow version.

The execution actor asks ``Deciders.get(workflow, version)`` and drives what
it gets through the ``Decider`` protocol; it never knows the kind of workflow.
Manifest DAGs are the one kind today; a second kind registers here.
"""

from __future__ import annotations

from natsflow.actors.jetstream.definitions import Definitions
from natsflow.events.decider import Decider
from natsflow.manifests.decider import ManifestDecider


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
