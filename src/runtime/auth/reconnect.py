"""When to reconnect a dropped stream: jittered exponential backoff and a breaker.

Pure decisions over numbers, so hypothesis can check them: the first retry comes within 1 s,
no pause exceeds 30 s, and the breaker lets at most ``max_failures`` failed connects through in
any ``window_s`` — a flapping server never sees a reconnect storm (KIS may block a key and IP
that loops, KIS_API.md §7.1).
"""

from __future__ import annotations

import attrs

__all__ = ["Breaker", "backoff_delay"]

FIRST_RETRY_S = 1.0
MAX_DELAY_S = 30.0


def backoff_delay(
    attempt: int, draw: float, *, first_s: float = FIRST_RETRY_S, cap_s: float = MAX_DELAY_S
) -> float:
    """The pause before reconnect ``attempt`` (0 = the first retry after a drop).

    ``draw`` is a uniform number in [0, 1). Attempt 0 waits ``draw * first_s`` (a drop is usually
    one-off: come back at once, yet not all clients of a restarted server in the same instant);
    attempt n waits between half and all of ``min(cap, first * 2**n)`` ("equal jitter").
    """
    draw = min(max(draw, 0.0), 1.0)
    if attempt <= 0:
        return draw * first_s
    ceiling = min(cap_s, first_s * 2.0 ** min(attempt, 32))
    return ceiling / 2 + draw * ceiling / 2


@attrs.frozen
class Breaker:
    """Counts failed connects (refused, or dropped before ``stable_s`` of life) in a window.

    Open once ``max_failures`` fall inside ``window_s``: the session then stops with a typed
    error instead of trying again. A connection that lived ``stable_s`` clears the count.
    """

    max_failures: int = 6
    window_s: float = 120.0
    stable_s: float = 20.0
    failures: tuple[float, ...] = ()

    def record_failure(self, now: float) -> Breaker:
        """This breaker after one more failure at monotonic ``now``."""
        recent = tuple(t for t in self.failures if now - t < self.window_s)
        return attrs.evolve(self, failures=(*recent, now))

    def record_connected(self, connected_at: float, ended_at: float) -> Breaker:
        """A connection that ran from ``connected_at`` to ``ended_at``: stable ones clear the count."""
        if ended_at - connected_at >= self.stable_s:
            return attrs.evolve(self, failures=())
        return self.record_failure(ended_at)

    def is_open(self, now: float) -> bool:
        """True when ``max_failures`` failures fall within the window ending at ``now``."""
        return sum(1 for t in self.failures if now - t < self.window_s) >= self.max_failures

    def attempt(self, now: float) -> int:
        """How many failures are in the window: the backoff attempt number of the next retry."""
        return sum(1 for t in self.failures if now - t < self.window_s)
