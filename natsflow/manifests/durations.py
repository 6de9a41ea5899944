"""Durations in manifests: ``"250ms"``, ``"2s"``, ``"1.5m"``, ``"1h30m"``, ``"30d"`` or seconds."""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["DURATION_HINT", "format_duration", "parse_duration"]

DURATION_HINT = "use e.g. 500ms, 2s, 5m, 1h"
_UNITS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),  # retention: 30d
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+")
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")


def parse_duration(value: str | float | int) -> float:
    """Turn ``"250ms"``, ``"2s"``, ``"1.5m"``, ``"1h30m"`` or a number of seconds into seconds.

    A plain number (or numeric string) is seconds. Raises ValueError for
    anything else, and for negative or non-finite values.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
    seconds: float
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(_NUMBER, text):
            total = Fraction(text)
        elif _DURATION.fullmatch(text):
            total = sum((Fraction(n) * _UNITS[unit] for n, unit in _PART.findall(text)), Fraction())
        else:
            raise ValueError(f"invalid duration {value!r} ({DURATION_HINT})")
        try:
            seconds = float(total)
        except OverflowError:
            raise ValueError(f"invalid duration {value!r}: too large") from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Write ``seconds`` as a manifest would: ``"250ms"``, ``"1h30m"``, ``"1.5s"``.

    ``parse_duration(format_duration(x)) == x`` for every finite ``x >= 0``.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}: must be a finite number >= 0")
    if float(seconds).is_integer():
        hours, rest = divmod(int(seconds), 3600)
        minutes, secs = divmod(rest, 60)
        parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
        return "".join(parts) or "0s"
    millis = round(seconds * 1000)
    if seconds < 1 and millis / 1000 == seconds:
        return f"{millis}ms"
    return f"{float(seconds)!r}s"
