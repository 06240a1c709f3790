"""States, steps and the small value types that travel between layers. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VersionState(StrEnum):
    PENDING = "pending"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"
    FAILED = "failed"


class Strategy(StrEnum):
    SINGLE = "single"
    ALTERNATING = "alternating"
    DUAL = "dual"


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    EMERGENCY = "emergency"
    LEAK = "leak"


class Step(StrEnum):
    """The rotation protocol, in order. `wait` holds until consumers moved or grace ended."""

    CREATE = "create"
    SET = "set"
    TEST = "test"
    PUBLISH = "publish"
    FINISH = "finish"
    WAIT = "wait"
    REVOKE = "revoke"
    DONE = "done"


STEP_ORDER = tuple(Step)


def next_step(step: Step) -> Step:
    return STEP_ORDER[STEP_ORDER.index(step) + 1]


class RotationStatus(StrEnum):
    RUNNING = "running"  # work to do now
    WAITING = "waiting"  # in the wait step: consumers or grace
    RETRYING = "retrying"  # a failed attempt; next_attempt_at says when
    DONE = "done"
    FAILED = "failed"  # gave up after max attempts; the current value still works
    ABORTED = "aborted"


ACTIVE_STATUSES = (RotationStatus.RUNNING, RotationStatus.WAITING, RotationStatus.RETRYING)


class Secret:
    """A secret value that does not show itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret is not to be pickled")


@dataclass(frozen=True)
class PasswordRules:
    """How a target wants its passwords: length and alphabet (minus forbidden characters)."""

    length: int = 32
    alphabet: str = "urlsafe"  # urlsafe | alnum | ascii | hex | or the characters themselves
    forbid: str = ""
    min_length: int = 12
    max_length: int = 1024
