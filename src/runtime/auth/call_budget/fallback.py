"""FallbackCallBudget: a shared budget that degrades, never stops.

When the shared state cannot be reached (Redis down, the folder unwritable), calls go on under a
conservative local share of the key's limit (:data:`LOCAL_SHARE`: a quarter, as if four
processes shared the key) with one warning per outage; the shared budget is tried again every
:data:`RETRY_S` seconds and the return is logged too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from runtime.auth.call_budget._common import BudgetStateUnavailable, usages_of
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.ports import Booking, BudgetUsage, CallBudgetPort, ClockPort
from runtime.broker.base import BrokerScope
from runtime.deadline import Deadline
from runtime.forksafe import renew_in_child

__all__ = ["LOCAL_SHARE", "RETRY_S", "FallbackCallBudget"]

_log = logging.getLogger(__name__)

#: The fraction of the key's limit one process allows itself while the shared state is out of reach.
LOCAL_SHARE = 0.25
#: How long after a failure the shared state is asked again.
RETRY_S = 5.0


class FallbackCallBudget:
    """``shared`` while it answers, a local share of the limit while not. Implements CallBudgetPort."""

    def __init__(self, shared: CallBudgetPort, clock: ClockPort, limit_per_s: float) -> None:
        self._shared = shared
        self._clock = clock
        self._local = InProcessCallBudget(clock, limit_per_s * LOCAL_SHARE)
        self._renew()
        renew_in_child(self, FallbackCallBudget._renew)

    @property
    def shared(self) -> bool:
        return True

    @property
    def degraded(self) -> bool:
        """True while calls are paced by the local share."""
        return self._down_until is not None

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        if self._use_shared():
            try:
                waited = self._shared.acquire(scope, deadline)
            except BudgetStateUnavailable as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return waited
        return self._local.acquire(scope, deadline)

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        # Slots of the two budgets are on different clocks or far apart: only one matches.
        self._local.release(scope, booking)
        if self._use_shared():
            self._shared.release(scope, booking)

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        self._local.rate_limited(scope, retry_after_s)
        if self._use_shared():
            self._shared.rate_limited(scope, retry_after_s)

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        return self._shared.usage(scope)

    def usages(self, scopes: Sequence[BrokerScope]) -> list[BudgetUsage | None]:
        """:meth:`usage` of every scope, in one batch where the shared budget reads one."""
        return usages_of(self._shared, scopes)

    def _renew(self) -> None:
        self._lock = threading.Lock()
        self._down_until: float | None = None

    def _use_shared(self) -> bool:
        with self._lock:
            return self._down_until is None or self._clock.monotonic() >= self._down_until

    def _went_down(self, exc: BudgetStateUnavailable) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock.monotonic() + RETRY_S
        if first:
            _log.warning(
                "the shared call budget is out of reach (%s); this process goes on at %g calls/s "
                "(a quarter of the key's limit) and tries again every %g s",
                exc,
                self._local.policy.limit_per_s,
                RETRY_S,
            )

    def _came_back(self) -> None:
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
        if was_down:
            _log.info("the shared call budget answers again; back to the key's shared limit")
