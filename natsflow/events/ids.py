"""Execution ids: ``<workflow>-<18 Crockford base32 digits>``, sortable by start time.

Pure: the time and the random bytes come in as arguments (the start use case
passes its clock and entropy source), so an id can be reproduced in a test.

>>> new_execution_id("hello", 1_700_000_000.0, bytes(5))
'hello-01hf7yat0000000000'
"""

from __future__ import annotations

import hashlib

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
ENTROPY_BYTES = 5


def new_execution_id(workflow: str, now: float, entropy: bytes) -> str:
    """``<workflow>-<time><random>``: milliseconds since the epoch, then 40 random bits.

    Ids of one workflow sort by start time; two instances starting in the same
    millisecond differ in the random part.
    """
    value = (int(now * 1000) << 40) | int.from_bytes(entropy[:ENTROPY_BYTES], "big")
    chars = []
    for _ in range(18):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{workflow}-{''.join(reversed(chars))}"


# A fan-out item key used as it is in a child's id; any other is hashed.
_SAFE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def child_execution_id(parent: str, step: str, iteration: int = 0, run: int = 0) -> str:
    """The id of the child execution that a ``workflow`` step starts: derived from the
    parent's id and the step key, so a step carried out again never starts a second child.

    ``=`` separates the parts: it is in no workflow name, step name or generated id, is
    a valid NATS subject and KV key character, and needs no escaping in a URL path.

    >>> child_execution_id("sync-01hf7yat0000000000", "campus")
    'sync-01hf7yat0000000000=campus'
    >>> child_execution_id("sync-01hf7yat0000000000", "entity[person]")
    'sync-01hf7yat0000000000=entity=person'
    >>> child_execution_id("sync-01hf7yat0000000000", "entity[a.b]")
    'sync-01hf7yat0000000000=entity==2e7336dc8eba87ef'

    A fan-out item key that is not a plain word (``.``, spaces, ...) is hashed, behind
    a second ``=`` so that it never equals a plain key. A ``repeat`` step's later
    iterations get ``=<iteration>`` (a step is never both a fan-out and a loop).

    ``run`` is non-zero for a step run afresh by a resume (its attempts numbered after
    ``run`` earlier ones): its earlier child ended (cancelled with the failed parent, or
    it ran before a ``--from``), so it gets a child of its own, ``=r<run>`` after the rest.

    >>> child_execution_id("sync-01hf7yat0000000000", "campus", run=2)
    'sync-01hf7yat0000000000=campus=r2'
    """
    return _child_id(parent, step, iteration) + (f"=r{run}" if run else "")


def _child_id(parent: str, step: str, iteration: int) -> str:
    name, bracket, rest = step.partition("[")
    if bracket:
        key = rest[:-1]
        if key and len(key) <= 64 and set(key) <= _SAFE_KEY:
            return f"{parent}={name}={key}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return f"{parent}={name}=={digest}"
    return f"{parent}={step}={iteration}" if iteration else f"{parent}={step}"


def is_routed_child(recorded: str, actual: str) -> bool:
    """Whether ``actual`` is the child a parent recorded as ``recorded``: the same id,
    or that id routed to a code app (``<app>==<recorded>``: the starter prefixes a child
    whose workflow is a code app's, which the parent's pure decider cannot know)."""
    if actual == recorded:
        return True
    head, sep, rest = actual.partition("==")
    return bool(sep and head and "=" not in head and rest == recorded)
