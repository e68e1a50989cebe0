"""The call budget's decisions, pure: GCRA with reservations over one shared state per key.

GCRA (the generic cell rate algorithm, as in ATM networks and redis-cell) keeps one number per
key, the theoretical arrival time ``tat``: the earliest moment the next call may start. A call
*books* the slot ``max(now, tat)`` and moves ``tat`` one interval on; it then sleeps until its
slot. Bookings are taken in the order callers reach the state (under a lock, or inside one Redis
script), so waiters are served first come, first served and no process starves: with N
processes each asking again as soon as its call returns, each gets every N-th slot.

The interval is ``(1 + GUARD) / limit``: slots are evenly spaced slightly wider than the limit,
so that the jitter between booking a slot and KIS receiving the request never puts more than
``limit`` requests into one of KIS's one-second windows. After EGW00201 (another tool on the
key, or KIS counting differently) :func:`penalize` pushes ``tat`` past a whole window and
doubles the interval for :data:`SLOW_FOR_S`, for every process on the key at once.

Times are seconds on whatever clock the adapter shares between its users: the injected
monotonic clock in one process, the host's monotonic clock across processes (file), Redis's
``TIME`` across hosts. The Redis adapter runs the same rules in Lua.
"""

from __future__ import annotations

import math

import attrs

__all__ = [
    "GUARD",
    "HORIZON_S",
    "SLOW_FACTOR",
    "SLOW_FOR_S",
    "STARTS_KEPT",
    "BudgetPolicy",
    "BudgetState",
    "Grant",
    "Refusal",
    "penalize",
    "plausible",
    "reserve",
    "usage",
]

#: Slots are spaced 3% wider than ``1/limit``: ~30 ms of jitter per window at any rate.
GUARD = 0.03
#: After EGW00201 the interval is this many times longer for SLOW_FOR_S seconds.
SLOW_FACTOR = 2.0
SLOW_FOR_S = 5.0
#: No booking lies further ahead than the longest call deadline (600 s) plus a penalty: a state
#: further out was written on another clock (a reboot resets the monotonic clock) or is corrupt.
HORIZON_S = 700.0
#: Booked starts kept for ``used_last_s`` and ``queue``: the last second's and the future ones.
STARTS_KEPT = 256


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a finite number above 0, got {value!r}")


@attrs.frozen
class BudgetPolicy:
    """The key's documented limit (calls per second) and the spacing derived from it."""

    limit_per_s: float = attrs.field(validator=_positive)

    @property
    def interval(self) -> float:
        """Seconds between two booked slots when KIS has not complained."""
        return (1.0 + GUARD) / self.limit_per_s


@attrs.frozen
class BudgetState:
    """One key's shared state: the next free slot, the recent and future bookings, the slow-down."""

    tat: float
    starts: tuple[float, ...] = ()
    slow_until: float = 0.0
    limit_per_s: float = 0.0


@attrs.frozen
class Grant:
    """A booked slot: start in ``wait`` seconds; ``ahead`` calls were booked before it."""

    wait: float
    ahead: int
    state: BudgetState


@attrs.frozen
class Refusal:
    """No slot within the caller's time: the first free one is ``wait`` seconds away."""

    wait: float
    ahead: int


def plausible(state: BudgetState, now: float) -> bool:
    """False for a state that cannot have been written on this clock (reset it)."""
    numbers = (state.tat, state.slow_until, state.limit_per_s, *state.starts)
    return all(math.isfinite(x) for x in numbers) and state.tat - now <= HORIZON_S


def reserve(state: BudgetState | None, now: float, policy: BudgetPolicy, max_wait: float) -> Grant | Refusal:
    """Book the next free slot if it starts within ``max_wait`` seconds of ``now``; else book nothing."""
    state = state or BudgetState(tat=now)
    slot = max(now, state.tat)
    wait = slot - now
    ahead = _ahead(state, now)
    if wait > max_wait:
        return Refusal(wait, ahead)
    interval = policy.interval * (SLOW_FACTOR if now < state.slow_until else 1.0)
    starts = (*_recent(state.starts, now), slot)[-STARTS_KEPT:]
    booked = BudgetState(
        tat=slot + interval, starts=starts, slow_until=state.slow_until, limit_per_s=policy.limit_per_s
    )
    return Grant(wait, ahead, booked)


def penalize(state: BudgetState | None, now: float, hold_s: float) -> BudgetState:
    """KIS answered EGW00201 at ``now``: no new slot before ``now + hold_s``, and slower for a while.

    Idempotent for processes that hit the limit together: ``max``, not a sum."""
    state = state or BudgetState(tat=now)
    return attrs.evolve(
        state,
        tat=max(state.tat, now + max(hold_s, 0.0)),
        starts=_recent(state.starts, now),
        slow_until=max(state.slow_until, now + SLOW_FOR_S),
    )


def usage(state: BudgetState | None, now: float) -> tuple[int, int, float]:
    """(calls started in the last second, calls booked but not started, seconds to the first free slot)."""
    if state is None:
        return 0, 0, 0.0
    used = sum(1 for s in state.starts if now - 1.0 < s <= now)
    return used, _ahead(state, now), max(state.tat - now, 0.0)


def _ahead(state: BudgetState, now: float) -> int:
    return sum(1 for s in state.starts if s > now)


def _recent(starts: tuple[float, ...], now: float) -> tuple[float, ...]:
    return tuple(s for s in starts if s > now - 1.0)
