"""Execution ids: ``<workflow>-<18 Crockford base32 digits>``, sortable by start time.

Pure: the time and the random bytes come in as arguments (the start use case
passes its clock and entropy source), so an id can be reproduced in a test.

>>> new_execution_id("hello", 1_700_000_000.0, bytes(5))
'hello-01hf7yat0000000000'
"""

from __future__ import annotations

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
