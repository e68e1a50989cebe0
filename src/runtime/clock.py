"""ClockPort and its adapters: every time the runtime reads comes through here.

``now()`` is wall time for expiry decisions; ``monotonic()`` and ``sleep()`` measure and
spend durations (deadlines, pacing). A fake clock moves all three together, so one test can
drive expiry, budgets and pacing without waiting.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["ClockPort", "FakeClock", "OffsetClock", "SystemClock"]


class ClockPort(Protocol):
    """Source of time. No method raises."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, for durations and deadlines."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (a fake clock just advances)."""
        ...


_utc_now = datetime.now
_monotonic = time.monotonic


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return _utc_now(UTC)  # one global, not datetime.now: the cache hit reads the clock

    def monotonic(self) -> float:
        return _monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class OffsetClock:
    """The machine's clock shifted by an offset that only grows (``qts demo`` jumps a day ahead)."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._offset.total_seconds()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def advance(self, seconds: float) -> None:
        """Jump ahead; refuses to go back, as real time would."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._offset += timedelta(seconds=seconds)


class FakeClock:
    """A clock that moves only when told to; ``sleep`` advances it instantly."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._monotonic = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; going backwards is refused."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._monotonic += seconds

    def set_wall(self, when: datetime) -> None:
        """Step the wall clock (an NTP correction) without touching monotonic time."""
        if when.tzinfo is None:
            raise ValueError("set_wall needs a timezone-aware datetime")
        with self._lock:
            self._now = when.astimezone(UTC)
