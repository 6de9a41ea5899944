"""What becomes of an inbox message that does not match the contract (pure).

A worker in another language may send a result with a field missing or of the
wrong type. Dropping it would leave its step waiting until a deadline (or
forever, without one); dead-lettering it alone would too. So a result that still
names its step and attempt (``kind``, ``step``, ``attempt`` and ``iteration``
readable) becomes that attempt's failure, of kind ``invalid_result``, retried per
the step's policy, with the decoder's reason (naming the field) as its error.
Anything less readable is dead-lettered as before.

Either way the sender may learn why: a message carrying the header
``Natsflow-Reply-To`` (the one triggers use) is answered there with a
``Refusal``. JetStream keeps no reply subject with a stored message, so the
header is the only way back to a worker that published into a stream.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import msgspec

from natsflow.events.messages import ErrorInfo, Result

INVALID_RESULT = "invalid_result"


class Refusal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Told to a sender (its ``Natsflow-Reply-To``) whose message did not match its schema.

    ``error`` is the decoder's reason, naming the field (``Expected `bool`, got `str` -
    at `$.ok```). ``outcome`` says what natsflow did instead: ``attempt_failed`` (the
    attempt it names failed with kind ``invalid_result``, retried per policy) or
    ``dead_lettered`` (kept under ``dead_letter``: ``natsflow dlq show ID``).
    """

    execution_id: str
    error: str
    outcome: str
    step: str | None = None
    attempt: int | None = None
    dead_letter: int | None = None


def salvage_result(data: bytes, problem: str) -> Result | None:
    """The failure of the attempt an invalid result names, or None if it names none.

    ``problem`` is why the result did not decode; it becomes the attempt's error.
    """
    try:
        raw: Any = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(raw, dict) or raw.get("kind") != "result":
        return None
    step, attempt, iteration = raw.get("step"), raw.get("attempt"), raw.get("iteration", 0)
    if not isinstance(step, str) or not _count(attempt, 1) or not _count(iteration, 0):
        return None
    error = ErrorInfo(message=f"invalid result: {problem}", kind=INVALID_RESULT, retryable=True)
    return Result(step=step, attempt=attempt, iteration=iteration, ok=False, error=error)


def _count(value: Any, least: int) -> TypeGuard[int]:
    # bool is an int to Python, not to JSON Schema: ``true`` is no attempt number
    return type(value) is int and value >= least


refusal_encoder = msgspec.json.Encoder()
