"""The call budget's decisions, pure: GCRA with reservations over one shared state per key.

GCRA (the generic cell rate algorithm, as in ATM networks and redis-cell) keeps one number per
key, the theoretical arrival time ``tat``: the earliest moment the next call may start. A call
*books* the slot ``max(now, tat)`` and moves ``tat`` one interval on; it then sleeps until its
slot. Bookings are taken in the order callers reach the state (under a lock, or inside one Redis
script), so waiters are served first come, first served and no process starves: with N
processes each asking again as soon as its call returns, each gets every N-th slot.

KIS counts a call when it *arrives*, which is some time after its slot: a process descheduled
for 40 ms sends late, and if the next calls go out on time, KIS sees more than ``limit`` in one
second. So every call reports when its answer came back (:func:`release`): KIS has certainly
counted it by then. A new slot must also leave at most ``limit - 1`` calls whose arrival may lie
within the second before it (:func:`_window_floor`): a late call pushes the call ``limit`` places
after it later by as much, and no delay anywhere can put ``limit + 1`` calls into one of KIS's
seconds. A call not reported yet (booked far ahead, or its process killed) is assumed to arrive
:data:`UNREPORTED_S` after its slot. Slots are also spaced ``(1 + GUARD) / limit`` apart.

After EGW00201 (another tool on the key, or KIS counting differently) :func:`penalize` holds
new slots back for KIS's retry time and doubles the interval for :data:`SLOW_FOR_S`, for every
process on the key at once.

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
    "SAME_SLOT_S",
    "SLOW_FACTOR",
    "SLOW_FOR_S",
    "STARTS_KEPT",
    "UNREPORTED_S",
    "BudgetPolicy",
    "BudgetState",
    "Grant",
    "Refusal",
    "penalize",
    "plausible",
    "release",
    "reserve",
    "usage",
]

#: Slots are spaced 1% wider than ``1/limit``; the window rule takes care of late arrivals.
GUARD = 0.01
#: How long after its slot a call that has not reported back is assumed to reach KIS.
UNREPORTED_S = 0.03
#: After EGW00201 the interval is this many times longer for SLOW_FOR_S seconds.
SLOW_FACTOR = 2.0
SLOW_FOR_S = 3.0
#: Times closer than this are the same slot (slots are at least 1/20 s apart).
SAME_SLOT_S = 1e-3
#: No booking lies further ahead than the longest call deadline (600 s) plus a penalty: a state
#: further out was written on another clock (a reboot resets the monotonic clock) or is corrupt.
HORIZON_S = 700.0
#: Bookings kept: those that may still count in a KIS second, and the future ones.
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

    @property
    def per_window(self) -> int:
        """Calls KIS admits in one second."""
        return max(1, math.floor(self.limit_per_s))


@attrs.frozen
class BudgetState:
    """One key's shared state: the next free slot, the recent and future bookings, the slow-down.

    ``starts[i]`` is a booked slot, ascending; ``done[i]`` when its answer came back (0: not yet).
    """

    tat: float
    starts: tuple[float, ...] = ()
    done: tuple[float, ...] = ()
    slow_until: float = 0.0
    limit_per_s: float = 0.0


@attrs.frozen
class Grant:
    """A booked slot: start in ``wait`` seconds, at ``slot``; ``ahead`` calls were booked before it."""

    wait: float
    slot: float
    ahead: int
    state: BudgetState


@attrs.frozen
class Refusal:
    """No slot within the caller's time: the first free one is ``wait`` seconds away."""

    wait: float
    ahead: int


def plausible(state: BudgetState, now: float) -> bool:
    """False for a state that cannot have been written on this clock (reset it)."""
    numbers = (state.tat, state.slow_until, state.limit_per_s, *state.starts, *state.done)
    return (
        all(math.isfinite(x) for x in numbers)
        and len(state.starts) == len(state.done)
        and state.tat - now <= HORIZON_S
    )


def reserve(state: BudgetState | None, now: float, policy: BudgetPolicy, max_wait: float) -> Grant | Refusal:
    """Book the next free slot if it starts within ``max_wait`` seconds of ``now``; else book nothing."""
    state = _pruned(state or BudgetState(tat=now), now)
    slot = max(now, state.tat, _window_floor(state, policy))
    wait = slot - now
    ahead = _ahead(state, now)
    if wait > max_wait:
        return Refusal(wait, ahead)
    interval = policy.interval * (SLOW_FACTOR if now < state.slow_until else 1.0)
    booked = attrs.evolve(
        state,
        tat=slot + interval,
        starts=(*state.starts, slot)[-STARTS_KEPT:],
        done=(*state.done, 0.0)[-STARTS_KEPT:],
        limit_per_s=policy.limit_per_s,
    )
    return Grant(wait, slot, ahead, booked)


def release(state: BudgetState | None, now: float, slot: float) -> BudgetState | None:
    """The call booked at ``slot`` got its answer at ``now`` (KIS has counted it by then)."""
    if state is None:
        return None
    done = tuple(
        now if abs(s - slot) < SAME_SLOT_S and d == 0.0 else d
        for s, d in zip(state.starts, state.done, strict=True)
    )
    return attrs.evolve(state, done=done)


def penalize(state: BudgetState | None, now: float, hold_s: float) -> BudgetState:
    """KIS answered EGW00201 at ``now``: no new slot before ``now + hold_s``, and slower for a while.

    Idempotent for processes that hit the limit together: ``max``, not a sum."""
    state = _pruned(state or BudgetState(tat=now), now)
    return attrs.evolve(
        state,
        tat=max(state.tat, now + max(hold_s, 0.0)),
        slow_until=max(state.slow_until, now + SLOW_FOR_S),
    )


def usage(state: BudgetState | None, now: float) -> tuple[int, int, float]:
    """(calls started in the last second, calls booked but not started, seconds to the first free slot)."""
    if state is None:
        return 0, 0, 0.0
    used = sum(1 for s in state.starts if now - 1.0 < s <= now)
    return used, _ahead(state, now), max(state.tat - now, 0.0)


def _window_floor(state: BudgetState, policy: BudgetPolicy) -> float:
    """The earliest slot with fewer than ``per_window`` calls that may reach KIS in the second before it."""
    latest = sorted(_arrived_by(s, d) for s, d in zip(state.starts, state.done, strict=True))
    if len(latest) < policy.per_window:
        return -math.inf
    return latest[-policy.per_window] + 1.0 + SAME_SLOT_S


def _arrived_by(slot: float, done: float) -> float:
    """When KIS has certainly received the call booked at ``slot`` (a guess while it is not done)."""
    return done if done > 0.0 else slot + UNREPORTED_S


def _pruned(state: BudgetState, now: float) -> BudgetState:
    """Without the bookings that can no longer share a KIS second with a new one."""
    keep = [
        i
        for i, (s, d) in enumerate(zip(state.starts, state.done, strict=True))
        if max(_arrived_by(s, d), s) > now - 1.0
    ]
    return attrs.evolve(
        state, starts=tuple(state.starts[i] for i in keep), done=tuple(state.done[i] for i in keep)
    )


def _ahead(state: BudgetState, now: float) -> int:
    return sum(1 for s in state.starts if s > now)
