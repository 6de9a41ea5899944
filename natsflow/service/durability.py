"""What an acknowledged write survives, made explicit: the embedded server's config and checks.

``fsync`` (the default) makes the embedded nats-server write every acknowledged
message to disk before it answers (``sync_interval: always``); ``relaxed`` keeps
nats-server's lazy default (a sync every two minutes: a power failure can lose
acknowledged writes, as Jepsen showed for NATS 2.12); ``replicated`` asks for R3
streams on a cluster. The embedded server's config is written here from the
mode, and the server's own report (``/varz``) is checked against it, so a user
config that drops ``sync_interval`` cannot silently weaken ``fsync``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path

import anyio

from natsflow.events.errors import InputError, NatsflowError

log = logging.getLogger("natsflow")

# The embedded server's own settings. A user config (NATSFLOW_NATS_CONFIG) is included
# after them, so its top-level keys win; a `jetstream` block there replaces this one.
_BASE = """\
# Written by natsflow for its embedded nats-server at every start; edits are lost.
# Put your own settings in a file named by NATSFLOW_NATS_CONFIG: it is included below.
server_name: natsflow-embedded
max_payload: 8MB

jetstream {{
  max_file_store: 10G
  max_memory_store: 256M
{sync}}}
"""


def embedded_config(durability: str, user_config: str | None, config_dir: str | Path) -> str:
    """The embedded server's config file (to be written in ``config_dir``) for
    ``durability`` (``fsync`` or ``relaxed``). Its monitoring port is a command-line
    flag (``-m``), which no config file can move."""
    sync = "  sync_interval: always\n" if durability == "fsync" else ""
    text = _BASE.format(sync=sync)
    if user_config is not None:
        # nats-server joins an include onto the including file's directory as written
        # (even "/a/b"), without resolving links: so no resolve() on either side here.
        path = os.path.relpath(os.path.abspath(user_config), os.path.abspath(config_dir))
        text += f"\ninclude {json.dumps(path)}\n"
    return text


async def embedded_syncs_always(monitor_port: int) -> bool:
    """Whether the embedded server fsyncs every write, as its monitoring endpoint says."""

    def read() -> bool:
        url = f"http://127.0.0.1:{monitor_port}/varz"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                varz = json.load(reply)
        except (OSError, ValueError) as exc:
            raise NatsflowError(
                f"the embedded nats-server's monitoring endpoint {url} did not answer "
                f"({exc}): natsflow reads its sync setting there"
            ) from None
        return bool(varz.get("jetstream", {}).get("config", {}).get("sync_always", False))

    return await anyio.to_thread.run_sync(read)


def check_embedded(durability: str, syncs_always: bool, user_config: str | None) -> None:
    """Refuse ``fsync`` on a server that does not fsync; log the mode the service runs under."""
    if durability == "fsync" and not syncs_always:
        raise InputError(
            f"NATSFLOW_DURABILITY: fsync, but the embedded nats-server does not sync every "
            f"write (NATSFLOW_NATS_CONFIG {user_config!r} replaces its jetstream block "
            f"without `sync_interval: always`): add it there, or set NATSFLOW_DURABILITY=relaxed"
        )
    if durability == "fsync":
        log.info("durability: fsync (the embedded nats-server syncs every write to disk)")
    elif syncs_always:
        log.info("durability: relaxed, but the embedded nats-server syncs every write anyway")
    else:
        log.warning(
            "durability: relaxed (the embedded nats-server syncs to disk every 2 minutes: "
            "a power failure can lose acknowledged writes)"
        )


def log_external(durability: str, replicas: int, url: str) -> None:
    """Log the mode against an external server, and warn where it cannot be vouched for."""
    if durability == "replicated":
        log.info("durability: replicated (R%d streams on the cluster at %s)", replicas, url)
    elif durability == "fsync":
        log.warning(
            "durability: fsync on an external nats-server (%s, R%d streams): natsflow cannot "
            "read its sync setting; unless it runs with `jetstream { sync_interval: always }`, "
            "a power failure can lose acknowledged writes",
            url,
            replicas,
        )
    else:
        log.warning(
            "durability: relaxed on %s with R%d streams: unless the server syncs every write, "
            "a power failure can lose acknowledged writes",
            url,
            replicas,
        )
