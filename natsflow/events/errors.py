"""natsflow's exceptions: one root, subclasses that say what the caller should do."""

from __future__ import annotations


class NatsflowError(Exception):
    """Root of every error natsflow raises on purpose."""


class StepError(NatsflowError):
    """A step attempt failed. ``kind`` names the error class for ``retry.on`` filters."""

    retryable: bool = True

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind or type(self).__name__


class TerminalStepError(StepError):
    """The step failed and retrying cannot help (bad input, 4xx, explicit refusal)."""

    retryable = False


class RetryableStepError(StepError):
    """The step failed for a reason that may pass; ``retry_after`` overrides the backoff."""

    retryable = True

    def __init__(
        self, message: str, *, kind: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after


class ConcurrencyConflict(NatsflowError):
    """Another decider appended to the execution first; reload and decide again."""

    def __init__(self, execution: str, expected: int) -> None:
        super().__init__(
            f"execution {execution}: another decider appended after sequence {expected}"
        )
        self.execution = execution
        self.expected = expected


class ManifestError(NatsflowError):
    """A manifest is invalid; ``problems`` lists every problem as ``path: reason``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid manifest {source}:\n{listing}")
        self.source = source
        self.problems = problems


class ExpressionError(NatsflowError):
    """An expression could not be parsed or evaluated."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"expression {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason


class InputError(NatsflowError):
    """Input from outside (CLI, API, trigger payload) is invalid: names field and value."""


class InvalidInput(InputError):
    """An execution's input breaks its workflow's ``input`` JSON Schema.

    ``problems`` lists every problem as ``input.path: reason`` (sorted by path);
    ``headline`` says which workflow and version refused it.
    """

    def __init__(self, headline: str, problems: list[str]) -> None:
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{headline}:\n{listing}")
        self.headline = headline
        self.problems = problems


class NotFound(NatsflowError):
    """A workflow, version or execution does not exist."""


class SnapshotSchemaError(NatsflowError):
    """A snapshot was written by a state schema this code cannot read or upgrade."""

    def __init__(self, execution: str, version: int, reason: str) -> None:
        super().__init__(f"execution {execution}: snapshot schema v{version}: {reason}")
        self.execution = execution
        self.version = version


class NewerEvent(NatsflowError):
    """An event batch holds event types this version does not know: a newer natsflow
    wrote it (a rolling upgrade). Not parked: the message is left for an instance
    that can read it, as with a newer snapshot."""

    def __init__(self, types: list[str]) -> None:
        super().__init__(
            f"event type(s) {', '.join(sorted(set(types)))} unknown to this natsflow "
            "(written by a newer version?): left for an instance that knows them"
        )
        self.types = types


class Undecodable(NatsflowError):
    """Stored data cannot be decoded (corrupt, or not written by natsflow).

    ``what`` says which kind (``event``, ``snapshot``, ``summary``); ``stream``,
    ``subject`` and ``seq`` say where it is; ``reason`` is the decoder's words.
    An execution whose event or snapshot is undecodable cannot be folded: the
    actor parks it as failed (it never skips a fact it cannot read), with this
    message as its error, and dead-letters a copy of ``data``.
    """

    def __init__(
        self,
        execution: str,
        what: str,
        stream: str,
        subject: str,
        seq: int,
        reason: str,
        data: bytes = b"",
    ) -> None:
        super().__init__(
            f"execution {execution}: undecodable {what} on {subject}"
            f" at sequence {seq} of {stream}: {reason}"
        )
        self.execution = execution
        self.what = what
        self.stream = stream
        self.subject = subject
        self.seq = seq
        self.reason = reason
        self.data = data


class Misdirected(NatsflowError):
    """An inbox message that cannot be for its execution: the execution does not exist,
    or has no such step, or never scheduled that attempt. Not at-least-once traffic (a
    late copy of a result the execution no longer waits for is ignored, not this) but a
    sender's mistake: the message goes to the dead letters under ``reason``."""

    def __init__(self, execution: str, message: str, reason: str) -> None:
        super().__init__(f"execution {execution}: {message}")
        self.execution = execution
        self.reason = reason


class Conflict(NatsflowError):
    """The request contradicts the current state (cancel a finished execution, ...): 409."""


class Unavailable(NatsflowError):
    """NATS is unreachable or did not answer in time: retry later (503).

    Raised by the JetStream adapter, the only code that sees NATS's own errors.
    """


class InternalError(NatsflowError):
    """The service failed to carry out a request for a reason of its own (500): see its log."""


class NondeterminismError(NatsflowError):
    """Replaying a recorded history with this code decided something else.

    ``expected`` is what the code decides now, ``recorded`` what the history
    holds, at ``step`` of ``execution`` (``position`` counts decisions from 0).
    """

    def __init__(
        self, execution: str, step: str | None, expected: str, recorded: str, position: int
    ) -> None:
        super().__init__(
            f"execution {execution}: nondeterminism at decision {position}"
            f" (step {step or '-'}): the code decides {expected}, the history recorded {recorded}"
        )
        self.execution = execution
        self.step = step
        self.expected = expected
        self.recorded = recorded
        self.position = position
