"""NATS subject patterns of trigger subjects: which overlap (pure).

Two workflows whose trigger subjects overlap would both claim a message; the
deploy that would make them overlap is refused instead (no silent fan-out).
"""

from __future__ import annotations


def overlaps(a: str, b: str) -> bool:
    """Whether some subject matches both patterns (``*`` one token, ``>`` the rest)."""
    return _overlap(a.split("."), b.split("."))


def _overlap(a: list[str], b: list[str]) -> bool:
    if not a or not b:
        return not a and not b
    if a[0] == ">" or b[0] == ">":
        return True  # each side still has at least one token: ">" takes the rest
    if a[0] == "*" or b[0] == "*" or a[0] == b[0]:
        return _overlap(a[1:], b[1:])
    return False
