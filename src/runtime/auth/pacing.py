"""Per-scope call pacing, so a burst of calls never draws EGW00201 (KIS_API.md §11).

KIS counts calls per app key per second. The pacer mirrors that with a sliding one-second
window: at most ``max_per_second`` calls start within any window, plus a small guard for the
difference between our clock and KIS's. Time comes from the injected clock.
"""

from __future__ import annotations

import bisect
import threading
from datetime import timedelta

from runtime.auth.ports import ClockPort
from runtime.deadline import Deadline
from runtime.errors import CallRateLimitedError

__all__ = ["Pacer"]

_WINDOW_S = 1.0
_GUARD_S = 0.05


class Pacer:
    """A sliding-window limiter shared by every thread of one runtime."""

    def __init__(self, clock: ClockPort, max_per_second: float) -> None:
        if max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        self._clock = clock
        self._capacity = max(1, int(max_per_second))
        # Below 1/s, one call per 1/rate seconds.
        self._window = _WINDOW_S if max_per_second >= 1 else 1.0 / max_per_second
        self._starts: list[float] = []  # start times, sorted; some may be reserved in the future
        self._lock = threading.Lock()

    @property
    def max_per_second(self) -> float:
        return self._capacity / self._window

    def acquire(self, deadline: Deadline) -> float:
        """Wait (via the clock) until a call may start; returns the seconds waited.

        Raises CallRateLimitedError when the wait would not fit in the time ``deadline`` has
        left, and BrokerUnavailableError when none is left.
        """
        budget_s = deadline.left_or_raise()
        with self._lock:
            now = self._clock.monotonic()
            expired = bisect.bisect_right(self._starts, now - self._window - _GUARD_S)
            del self._starts[:expired]
            wait = 0.0
            if len(self._starts) >= self._capacity:
                wait = self._starts[0] + self._window + _GUARD_S - now
                if wait > budget_s:
                    raise CallRateLimitedError(
                        f"the per-second call limit needs a {wait:.2f} s wait, more than the time left",
                        retry_after=timedelta(seconds=wait),
                    )
                del self._starts[0]
            # Reserve the slot before sleeping so concurrent callers queue behind us.
            bisect.insort(self._starts, now + wait)
        if wait > 0:
            self._clock.sleep(wait)
        return wait
