"""Honest readiness: connected to NATS, and every stream and consumer in place.

``Health.run`` looks every second for natsflow's streams, KV buckets and the
consumers this process pulls from (``topology.find_missing``). While something is
missing, ``reason()`` names it (``/readyz`` answers 503 with it) and the topology
is provisioned again (idempotent), so the service heals itself; the pullers
resume on the re-created consumer by themselves (``puller.MISSING_RETRY``). One
log line when something goes missing and one when all is back, not one per check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from natsflow.events.errors import Unavailable

__all__ = ["CHECK_INTERVAL", "Health"]

log = logging.getLogger("natsflow")

CHECK_INTERVAL = 1.0
"""Seconds between two checks of the topology."""


class Health:
    """The readiness of one process, kept up to date by ``run``.

    ``check`` lists what is missing (empty when all is there; ``Unavailable`` when
    NATS does not answer), ``heal`` provisions the topology again, ``connected``
    tells whether the NATS connection is up.
    """

    def __init__(
        self,
        check: Callable[[], Awaitable[list[str]]],
        heal: Callable[[], Awaitable[None]],
        connected: Callable[[], bool],
        *,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self._check = check
        self._heal = heal
        self._connected = connected
        self._interval = interval
        self._missing: tuple[str, ...] = ()
        self._heal_error: str | None = None

    def reason(self) -> str | None:
        """Why this process is not ready, or None when it is."""
        if not self._connected():
            return "not connected to NATS"
        if self._missing:
            verb = "is" if len(self._missing) == 1 else "are"
            text = f"{', '.join(self._missing)} {verb} missing"
            if self._heal_error is not None:
                text += f" (re-provisioning failed: {self._heal_error})"
            return text
        return None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check every ``interval`` seconds until cancelled (only while connected)."""
        task_status.started()
        while True:
            await anyio.sleep(self._interval)
            if self._connected():
                await self.check_once()

    async def check_once(self) -> None:
        """Look for what is missing; provision again when something is."""
        try:
            missing = tuple(await self._check())
        except Unavailable as exc:  # NATS away: reason() says so, the connection logs it
            log.debug("readiness check: %s", exc)
            return
        if not missing:
            if self._missing:
                log.info("%s back: ready again", ", ".join(self._missing))
            self._missing, self._heal_error = (), None
            return
        if missing != self._missing:
            log.warning("%s missing: not ready; provisioning it again", ", ".join(missing))
        self._missing = missing
        try:
            await self._heal()
        except Exception as exc:  # keep checking: a failed heal must not stop the service
            error = str(exc) or type(exc).__name__
            if error != self._heal_error:
                log.warning("provisioning natsflow's streams and consumers failed: %s", error)
            self._heal_error = error
        else:
            self._heal_error = None
