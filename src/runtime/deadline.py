"""Deadline: the end of one call in monotonic time, made once and handed to every step.

The call's budget is total wall time: the cache, the pacer, the stores, the adapter and the
transport all ask the same :class:`Deadline` how much is left, so no step can restart the
count or stretch it.
"""

from __future__ import annotations

import math

import attrs

from runtime.clock import ClockPort
from runtime.errors import BrokerUnavailableError

__all__ = ["Deadline"]


def _finite_non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite number of seconds >= 0, got {value!r}")


@attrs.frozen
class Deadline:
    """A point on ``clock.monotonic()`` after which the call has failed.

    Build one per call with :meth:`after`; never store one beyond its call.
    """

    at: float
    total_s: float = attrs.field(validator=_finite_non_negative)
    clock: ClockPort = attrs.field(repr=False, eq=False)

    @classmethod
    def after(cls, clock: ClockPort, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now on ``clock``."""
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a deadline needs a finite number of seconds >= 0, got {seconds!r}")
        return cls(clock.monotonic() + seconds, seconds, clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(self.at - self.clock.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        """True once no time is left."""
        return self.clock.monotonic() >= self.at

    def left_or_raise(self, what: str = "call") -> float:
        """Seconds left; raises BrokerUnavailableError (retryable) when none are."""
        left = self.at - self.clock.monotonic()
        if left <= 0:
            raise BrokerUnavailableError(f"{what} deadline of {self.total_s:g} s exceeded")
        return left

    def extended(self, seconds: float) -> Deadline:
        """The same deadline moved ``seconds`` later (time granted for one wait alone)."""
        return attrs.evolve(self, at=self.at + max(seconds, 0.0), total_s=self.total_s + max(seconds, 0.0))
