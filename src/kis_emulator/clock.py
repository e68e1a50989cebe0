"""Clocks for the emulator: the protocol it needs and a default that can be shifted forward.

Every time-based rule (token expiry, 6-hour reuse, the 1-per-minute tokenP limit, the per-second
call limit) reads the injected clock, so tests move time instead of sleeping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class EmulatorClock(Protocol):
    """What the emulator needs from a clock: the current time, aware and in UTC."""

    def now(self) -> datetime:
        """Return the current time as a timezone-aware UTC datetime."""
        ...


@runtime_checkable
class AdvanceableClock(EmulatorClock, Protocol):
    """A clock that the admin interface may move forward."""

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        ...


class ClockNotAdvanceableError(TypeError):
    """Raised by ``advance`` when the injected clock has no ``advance(seconds)`` method."""


class ShiftableClock:
    """System UTC time plus an offset that only grows.

    Real time keeps flowing (so a live client sees a live clock), and ``advance`` jumps ahead
    without sleeping. It refuses to go backwards, as trio's MockClock does: tokens and rate windows
    assume time is monotonic.
    """

    def __init__(self, offset: timedelta | None = None) -> None:
        self._offset = offset if offset is not None else timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """System UTC time shifted by the accumulated offset."""
        with self._lock:
            offset = self._offset
        return datetime.now(UTC) + offset

    def advance(self, seconds: float) -> None:
        """Add ``seconds`` (>= 0) to the offset.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError(f"the clock cannot go backwards (seconds={seconds})")
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    @property
    def offset(self) -> timedelta:
        """How far ahead of system time this clock runs."""
        with self._lock:
            return self._offset


def advance_clock(clock: EmulatorClock, seconds: float) -> None:
    """Call ``clock.advance(seconds)`` or explain why that is impossible.

    Raises:
        ClockNotAdvanceableError: the clock has no callable ``advance``.
    """
    advance = getattr(clock, "advance", None)
    if not callable(advance):
        raise ClockNotAdvanceableError(
            f"the emulator clock {type(clock).__name__} has no advance(seconds) method; "
            "inject a clock that can be advanced (e.g. ShiftableClock)"
        )
    advance(seconds)


def checked_now(clock: EmulatorClock) -> datetime:
    """Read ``clock.now()`` and insist on an aware datetime, converted to UTC.

    A naive datetime would silently mix local and UTC times in expiry arithmetic.
    """
    now = clock.now()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"clock {type(clock).__name__}.now() returned a naive datetime")
    return now.astimezone(UTC)
