"""InProcessCallBudget: the key's budget inside one process (the memory token store)."""

from __future__ import annotations

import threading

from runtime.auth.call_budget._common import go_when_clear, max_wait, refused, usage_of
from runtime.auth.call_budget.gcra import BudgetPolicy, BudgetState, Refusal, penalize, reserve, start
from runtime.auth.call_budget.gcra import release as released
from runtime.auth.ports import Booking, BudgetUsage, ClockPort
from runtime.broker.base import BrokerScope
from runtime.deadline import Deadline
from runtime.forksafe import renew_in_child

__all__ = ["InProcessCallBudget"]


class InProcessCallBudget:
    """GCRA state per scope in a dict, shared by every thread of this process. Implements CallBudgetPort.

    A forked child starts with an empty budget and a fresh lock (it is another process).
    """

    def __init__(self, clock: ClockPort, limit_per_s: float) -> None:
        self._clock = clock
        self._policy = BudgetPolicy(limit_per_s)
        self._states: dict[BrokerScope, BudgetState] = {}
        self._lock = threading.Lock()
        renew_in_child(self, InProcessCallBudget._forget)

    @property
    def shared(self) -> bool:
        return False

    @property
    def policy(self) -> BudgetPolicy:
        return self._policy

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        with self._lock:
            now = self._clock.monotonic()
            outcome = reserve(self._states.get(scope), now, self._policy, max_wait(deadline))
            if isinstance(outcome, Refusal):
                raise refused(outcome, self._policy, deadline)
            self._states[scope] = outcome.state
        self._clock.sleep(outcome.wait)
        booking = Booking(outcome.wait, outcome.slot)
        extra = go_when_clear(
            lambda: self._start(scope, booking.slot),
            self._clock,
            deadline,
            self._policy,
            lambda: self.release(scope, booking),
        )
        return Booking(outcome.wait + extra, outcome.slot)

    def _start(self, scope: BrokerScope, slot: float) -> float:
        with self._lock:
            state, wait = start(self._states.get(scope), self._clock.monotonic(), slot, self._policy)
            self._states[scope] = state
            return wait

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        with self._lock:
            state = released(self._states.get(scope), self._clock.monotonic(), booking.slot)
            if state is not None:
                self._states[scope] = state

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        with self._lock:
            self._states[scope] = penalize(self._states.get(scope), self._clock.monotonic(), retry_after_s)

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        with self._lock:
            return usage_of(self._states.get(scope), self._clock.monotonic())

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._states = {}
