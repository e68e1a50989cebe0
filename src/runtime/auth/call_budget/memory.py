"""InProcessCallBudget: the key's budget inside one process (the memory token store).

The rules are :mod:`.gcra`'s; :class:`LiveState` runs them on a state it changes in place, so a
booking costs about a microsecond instead of copying every kept booking three times (the pure
functions rebuild tuples of up to STARTS_KEPT entries on each reserve, start and release). Its
results are those of the pure functions, step for step: tests/runtime/auth/test_call_budget_gcra.py
checks both side by side, and runs the rules' properties on each.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left, bisect_right, insort

from runtime.auth.call_budget import gcra
from runtime.auth.call_budget._common import go_when_clear, max_wait, refused, usage_of
from runtime.auth.call_budget.gcra import (
    ABANDONED_S,
    QUEUE_POLL_S,
    SAME_SLOT_S,
    SLOW_FACTOR,
    SLOW_FOR_S,
    STARTS_KEPT,
    UNREPORTED_S,
    WAITING_KEPT_S,
    BudgetPolicy,
    BudgetState,
    Refusal,
)
from runtime.auth.ports import Booking, BudgetUsage, ClockPort
from runtime.broker.base import BrokerScope
from runtime.deadline import Deadline
from runtime.forksafe import renew_in_child

__all__ = ["InProcessCallBudget", "LiveState"]


class InProcessCallBudget:
    """GCRA state per scope in a dict, shared by every thread of this process. Implements CallBudgetPort.

    A forked child starts with an empty budget and a fresh lock (it is another process).
    """

    _states: dict[BrokerScope, LiveState]
    _last_scope: BrokerScope | None
    _last_state: LiveState | None

    def __init__(self, clock: ClockPort, limit_per_s: float) -> None:
        self._clock = clock
        self._monotonic = clock.monotonic
        self._policy = BudgetPolicy(limit_per_s)
        self._forget()
        renew_in_child(self, InProcessCallBudget._forget)

    @property
    def shared(self) -> bool:
        return False

    @property
    def policy(self) -> BudgetPolicy:
        return self._policy

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        with self._lock:
            now = self._monotonic()
            state = self._last_state if scope is self._last_scope else None
            if state is None:
                state = self._state(scope, now)
            if state.take_free_slot(now):  # the uncontended call: no deadline to ask, no wait
                return Booking(0.0, now)
            slot = state.reserve(now, max_wait(deadline))
            if isinstance(slot, Refusal):
                raise refused(slot, self._policy, deadline)
            # A slot free now is started under the same lock, at the same instant: what `start`
            # would decide for a caller that reached it at once, without a second lock and lookup.
            if slot == now and state.start(now, slot) == 0.0:
                return Booking(0.0, slot)
        wait = slot - now
        self._clock.sleep(wait)
        booking = Booking(wait, slot)
        extra = go_when_clear(
            lambda: self._start(scope, slot),
            self._clock,
            deadline,
            self._policy,
            lambda: self.release(scope, booking),
        )
        return Booking(wait + extra, slot) if extra else booking

    def _start(self, scope: BrokerScope, slot: float) -> float:
        with self._lock:
            state = self._states.get(scope)
            if state is None:  # forgotten (a fork): an unknown slot goes at once, as in gcra.start
                return 0.0
            return state.start(self._clock.monotonic(), slot)

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        with self._lock:
            state = self._last_state if scope is self._last_scope else self._states.get(scope)
            if state is not None:
                state.release(self._monotonic(), booking.slot)

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        with self._lock:
            now = self._clock.monotonic()
            self._state(scope, now).penalize(now, retry_after_s)

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        with self._lock:
            state = self._states.get(scope)
            return usage_of(None if state is None else state.snapshot(), self._clock.monotonic())

    def _state(self, scope: BrokerScope, now: float) -> LiveState:
        # Callers first try the last scope asked for, by identity: a runtime passes the same one
        # every call, and hashing a BrokerScope (an attrs value) costs as much as a free booking.
        state = self._states.get(scope)
        if state is None:
            state = self._states[scope] = LiveState(self._policy, now)
        self._last_scope, self._last_state = scope, state
        return state

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._states = {}
        self._last_scope = None
        self._last_state = None


class LiveState:
    """One key's :class:`~.gcra.BudgetState`, changed in place by the rules of :mod:`.gcra`.

    Bookings are kept in booking order, so their slots only grow (each slot is at least ``tat``,
    which lies past the previous slot): the oldest is first and a slot is found by bisection.
    Beside them, ``arrivals``, sorted, holds when KIS has certainly received each call: the window
    floor of ``reserve`` without sorting. It is kept only when the floor can bind: with more calls
    a second than bookings kept (``per_window > STARTS_KEPT``), the window is never full. A free
    slot is booked and started in one step (:meth:`take_free_slot`); the paths of a call that
    waits (``start``'s floor, a refusal) scan or run the pure function itself.
    """

    __slots__ = (
        "arrivals",
        "done",
        "interval",
        "limit",
        "limit_per_s",
        "per_window",
        "policy",
        "sent",
        "slow_until",
        "starts",
        "tat",
        "track",
        "unsent",
    )
    policy: BudgetPolicy
    interval: float
    limit: float
    per_window: int
    track: bool
    tat: float
    slow_until: float
    limit_per_s: float
    starts: list[float]
    sent: list[float]
    done: list[float]
    arrivals: list[float]
    unsent: int

    def __init__(self, policy: BudgetPolicy, now: float) -> None:
        self.policy = policy
        self.limit = policy.limit_per_s
        self.interval = policy.interval
        self.per_window = policy.per_window
        self.track = self.per_window <= STARTS_KEPT
        self._load(gcra.BudgetState(tat=now))

    def snapshot(self) -> BudgetState:
        """The state as the pure functions hold it."""
        return BudgetState(
            self.tat,
            tuple(self.starts),
            tuple(self.sent),
            tuple(self.done),
            self.slow_until,
            self.limit_per_s,
        )

    # --- the rules (see the functions of the same name in gcra) ------------------------------------

    def take_free_slot(self, now: float) -> bool:
        """``reserve`` then ``start`` at ``now`` when the slot is free now and nothing booked
        earlier still waits to go out: True once booked and noted as sent; else False, nothing
        changed (the caller takes the general path).

        Exact: the slot is ``now`` (``tat`` and the window floor before pruning are not later,
        and pruning only lowers the floor), which any deadline allows; ``start`` then finds this
        booking (the only one at ``now``), a floor over fewer calls, and no earlier one waiting.
        """
        arrivals = self.arrivals
        if (
            self.tat > now
            or self.unsent
            or now <= 0.0  # a call sent at 0.0 would read as not sent
            or (len(arrivals) >= self.per_window and arrivals[-self.per_window] + 1.0 + SAME_SLOT_S > now)
        ):
            return False
        starts = self.starts
        if starts and starts[0] <= now - 1.0:
            if len(starts) == 1 or starts[1] > now - 1.0:
                self._drop_oldest_if_stale(now)  # the usual case, without _prune's call
            else:
                self._prune(now)
        starts.append(now)
        self.sent.append(now)
        self.done.append(0.0)
        if self.track:
            _insert(arrivals, now + UNREPORTED_S)
        if len(starts) > STARTS_KEPT:
            self._remove(0)
        self.tat = now + self.interval * (SLOW_FACTOR if now < self.slow_until else 1.0)
        self.limit_per_s = self.limit
        return True

    def reserve(self, now: float, max_wait: float) -> float | Refusal:
        """:func:`.gcra.reserve`: the booked slot, or the refusal (booking nothing)."""
        floor = self._floor(self.arrivals)
        if max(now, self.tat, floor) - now > max_wait:
            # The floor before pruning is at least the floor after it: maybe a refusal.
            return self._reserve_slowly(now, max_wait)
        if self._prune(now):
            floor = self._floor(self.arrivals)
        slot = max(now, self.tat, floor)
        self.starts.append(slot)
        self.sent.append(0.0)
        self.done.append(0.0)
        self.unsent += 1
        if self.track:
            insort(self.arrivals, slot + UNREPORTED_S)
        if len(self.starts) > STARTS_KEPT:
            self._remove(0)
        self.tat = slot + self.interval * (SLOW_FACTOR if now < self.slow_until else 1.0)
        self.limit_per_s = self.policy.limit_per_s
        return slot

    def start(self, now: float, slot: float) -> float:
        """:func:`.gcra.start`: 0.0 once the call booked at ``slot`` is noted as sent, else the wait."""
        self._prune(now)
        mine = self._index(slot)
        if mine is None:
            return 0.0
        if len(self.starts) > self.per_window:  # else fewer others than a window: no floor
            # As gcra.start does, over the calls that went out (a call that waited pays this scan).
            entries = zip(self.starts, self.sent, self.done, strict=True)
            others = [e for i, e in enumerate(entries) if i != mine and (e[1] > 0.0 or e[2] > 0.0)]
            floor = gcra._floor(others, self.policy)
            if floor > now:
                return floor - now
        sent, done = self.sent[mine], self.done[mine]
        mine_unsent = sent == 0.0 and done == 0.0
        if self.unsent > mine_unsent and self._held_back(mine, now):
            return QUEUE_POLL_S
        self._set(mine, now, done)
        return 0.0

    def release(self, now: float, slot: float) -> None:
        """:func:`.gcra.release`: the call booked at ``slot`` got its answer at ``now``."""
        starts = self.starts
        mine = len(starts) - 1 if starts and starts[-1] == slot else self._index(slot)  # newest: usual
        if mine is not None:
            self._set(mine, self.sent[mine] or now, now)

    def penalize(self, now: float, hold_s: float) -> None:
        """:func:`.gcra.penalize`: no new slot before ``now + hold_s``, and slower for a while."""
        self._prune(now)
        self.tat = max(self.tat, now + max(hold_s, 0.0))
        self.slow_until = max(self.slow_until, now + SLOW_FOR_S)

    # --- bookkeeping ------------------------------------------------------------------------------

    def _load(self, state: BudgetState) -> None:
        self.tat, self.slow_until, self.limit_per_s = state.tat, state.slow_until, state.limit_per_s
        self.starts, self.sent, self.done = list(state.starts), list(state.sent), list(state.done)
        entries = list(zip(self.starts, self.sent, self.done, strict=True))
        self.unsent = sum(1 for _slot, sent, done in entries if sent == 0.0 and done == 0.0)
        self.arrivals = sorted(gcra._arrived_by(*e) for e in entries) if self.track else []

    def _reserve_slowly(self, now: float, max_wait: float) -> float | Refusal:
        outcome = gcra.reserve(self.snapshot(), now, self.policy, max_wait)
        if isinstance(outcome, Refusal):
            return outcome  # as in gcra: a refusal keeps nothing, not even the pruning
        self._load(outcome.state)
        return outcome.slot

    def _floor(self, arrivals: list[float]) -> float:
        # gcra._floor over sorted arrivals: the per_window-th latest, one KIS second on.
        if len(arrivals) < self.per_window:
            return -math.inf
        return arrivals[-self.per_window] + 1.0 + SAME_SLOT_S

    def _index(self, slot: float) -> int | None:
        # gcra._index by bisection: the closest slot within SAME_SLOT_S, the newer one on a tie.
        starts = self.starts
        i = bisect_left(starts, slot)
        best: int | None = None
        best_gap = SAME_SLOT_S
        if i < len(starts) and abs(starts[i] - slot) < best_gap:
            best, best_gap = i, abs(starts[i] - slot)
        if i > 0 and abs(starts[i - 1] - slot) < best_gap:
            best = i - 1
        return best

    def _held_back(self, mine: int, now: float) -> bool:
        """An earlier booking whose call has not gone out may still go (gcra._waiting)."""
        sent, done, starts = self.sent, self.done, self.starts
        return any(sent[i] == 0.0 and done[i] == 0.0 and starts[i] > now - ABANDONED_S for i in range(mine))

    def _set(self, i: int, sent: float, done: float) -> None:
        """Booking ``i`` now went out at ``sent`` and reported at ``done`` (0: not yet)."""
        old_sent, old_done = self.sent[i], self.done[i]
        self.sent[i], self.done[i] = sent, done
        self.unsent += (sent == 0.0 and done == 0.0) - (old_sent == 0.0 and old_done == 0.0)
        if self.track:
            slot = self.starts[i]
            _replace(
                self.arrivals, gcra._arrived_by(slot, old_sent, old_done), gcra._arrived_by(slot, sent, done)
            )

    def _remove(self, i: int) -> None:
        slot, sent, done = self.starts.pop(i), self.sent.pop(i), self.done.pop(i)
        if sent == 0.0 and done == 0.0:
            self.unsent -= 1
        if self.track:
            arrived = gcra._arrived_by(slot, sent, done)
            arrivals = self.arrivals
            del arrivals[0 if arrivals[0] == arrived else bisect_left(arrivals, arrived)]  # mostly the oldest

    def _drop_oldest_if_stale(self, now: float) -> bool:
        """gcra._may_matter and gcra._arrived_by for the oldest booking, written out (this runs
        for nearly every call at KIS's limits): True when it no longer matters and was dropped."""
        slot, sent, done = self.starts[0], self.sent[0], self.done[0]
        unsent = sent == 0.0 and done == 0.0
        if unsent and slot > now - WAITING_KEPT_S:
            return False  # its caller may still be waiting to start
        arrived = done if done > 0.0 else (sent if sent > 0.0 else slot) + UNREPORTED_S
        if max(arrived, slot) > now - 1.0:
            return False
        del self.starts[0], self.sent[0], self.done[0]
        self.unsent -= unsent
        if self.track:
            arrivals = self.arrivals
            del arrivals[0 if arrivals[0] == arrived else bisect_left(arrivals, arrived)]
        return True

    def _prune(self, now: float) -> bool:
        """gcra._pruned in place: True when bookings were dropped.

        Only bookings whose slot is a second old may go (a later one may matter whatever its
        arrival), and slots grow in booking order, so the scan stops at the first recent slot."""
        starts = self.starts
        cut = now - 1.0
        if not starts or starts[0] > cut:
            return False
        if len(starts) == 1 or starts[1] > cut:  # only the oldest may go: the usual case
            return self._drop_oldest_if_stale(now)
        old = bisect_right(starts, cut)
        sent, done = self.sent, self.done
        drop = [i for i in range(old) if not gcra._may_matter((starts[i], sent[i], done[i]), now)]
        for i in reversed(drop):
            self._remove(i)
        return bool(drop)


def _insert(values: list[float], value: float) -> None:
    """``value`` into the sorted ``values``; mostly the latest, which spares the bisection (and
    the cache misses of its probes when the budget has not been used for a while)."""
    if not values or values[-1] <= value:
        values.append(value)
    else:
        insort(values, value)


def _replace(values: list[float], old: float, new: float) -> None:
    """In the sorted ``values``: ``old`` taken out, ``new`` put in."""
    if old != new:
        del values[bisect_left(values, old)]
        _insert(values, new)
