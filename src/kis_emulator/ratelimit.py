"""The per-second call limit: a sliding one-second window per app key on the emulator clock."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Final

WINDOW: Final = timedelta(seconds=1)


class SlidingWindowLimiter:
    """Admit at most ``limit`` calls per key in any one-second window.

    A sliding window (rather than PYKIS's fixed window) is the stricter reading of "20 per second",
    so a client that passes here also passes a fixed-window server. Refused calls are not recorded:
    otherwise a client hammering the limit would lock itself out forever.
    Not thread-safe: the caller holds the state lock.
    """

    def __init__(self) -> None:
        self._admitted: dict[str, deque[datetime]] = {}

    def admit(self, key: str, now: datetime, limit: int | None) -> bool:
        """Record and allow a call at ``now``, or refuse it when the window is full."""
        if limit is None:
            return True
        stamps = self._admitted.setdefault(key, deque())
        horizon = now - WINDOW
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if len(stamps) >= limit:
            return False
        stamps.append(now)
        return True

    def clear(self) -> None:
        """Forget every window."""
        self._admitted.clear()
