"""The call budget's decisions, pure: GCRA with reservations over one shared state per key.

GCRA (the generic cell rate algorithm, as in ATM networks and redis-cell) keeps one number per
key, the theoretical arrival time ``tat``: the earliest moment the next call may start. A call
*books* the slot ``max(now, tat)`` and moves ``tat`` one interval on; it then sleeps until its
slot. Bookings are taken in the order callers reach the state (under a lock, or inside one Redis
script), so waiters are served first come, first served and no process starves: with N
processes each asking again as soon as its call returns, each gets every N-th slot.

KIS counts a call when it *arrives*, which may be well after its slot: a process descheduled
for 40 ms sends late, and if the next calls go out on time, KIS sees more than ``limit`` in one
second. So a call that reaches its slot asks once more before it is sent (:func:`start`, which
notes when it went out) and reports when its answer came back (:func:`release`): KIS has
certainly counted it by then. A call starts only if at most ``limit - 1`` calls that went out
may have reached KIS in the second before (:func:`_floor`); a late call thus pushes the call
``limit`` places after it back by as much. A call that went out and has not reported yet is
assumed to reach KIS within :data:`UNREPORTED_S`. Booking uses the same rule with what is known
then, so that calls rarely wait at their start. Slots are spaced ``(1 + GUARD) / limit`` apart.

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
    "ABANDONED_S",
    "GUARD",
    "HORIZON_S",
    "QUEUE_POLL_S",
    "SAME_SLOT_S",
    "SLOW_FACTOR",
    "SLOW_FOR_S",
    "STARTS_KEPT",
    "UNREPORTED_S",
    "WAITING_KEPT_S",
    "BudgetPolicy",
    "BudgetState",
    "Grant",
    "Refusal",
    "penalize",
    "plausible",
    "release",
    "reserve",
    "start",
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
#: A booking whose call has not gone out is kept this long past its slot (its caller may wait).
WAITING_KEPT_S = 60.0
#: A booking this far past its slot without its call going out no longer holds later calls back.
ABANDONED_S = 5.0
# How soon a call held back by an earlier one that is about to go out asks again.
QUEUE_POLL_S = 0.002


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

    ``starts[i]`` is a booked slot, in booking order; ``sent[i]`` when that call went out and
    ``done[i]`` when its answer came back (0: not yet).
    """

    tat: float
    starts: tuple[float, ...] = ()
    sent: tuple[float, ...] = ()
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
    numbers = (state.tat, state.slow_until, state.limit_per_s, *state.starts, *state.sent, *state.done)
    return (
        all(math.isfinite(x) for x in numbers)
        and len(state.starts) == len(state.sent) == len(state.done)
        and state.tat - now <= HORIZON_S
    )


def reserve(state: BudgetState | None, now: float, policy: BudgetPolicy, max_wait: float) -> Grant | Refusal:
    """Book the next free slot if it starts within ``max_wait`` seconds of ``now``; else book nothing."""
    state = _pruned(state or BudgetState(tat=now), now)
    slot = max(now, state.tat, _floor(_entries(state), policy))
    wait = slot - now
    ahead = _ahead(state, now)
    if wait > max_wait:
        return Refusal(wait, ahead)
    interval = policy.interval * (SLOW_FACTOR if now < state.slow_until else 1.0)
    booked = _evolve(
        state,
        tat=slot + interval,
        starts=(*state.starts, slot)[-STARTS_KEPT:],
        sent=(*state.sent, 0.0)[-STARTS_KEPT:],
        done=(*state.done, 0.0)[-STARTS_KEPT:],
        limit_per_s=policy.limit_per_s,
    )
    return Grant(wait, slot, ahead, booked)


def start(
    state: BudgetState | None, now: float, slot: float, policy: BudgetPolicy
) -> tuple[BudgetState, float]:
    """The call booked at ``slot`` is about to go out at ``now``: (the state, seconds to wait first).

    With 0, it goes now and that is noted; otherwise nothing changes and it asks again after the
    wait (calls that went out meanwhile, late, leave KIS's second full). Calls go out in the order
    they were booked: one booked earlier that has not gone out holds this one back, unless it is
    :data:`ABANDONED_S` past its slot (its process died). An unknown slot (a reset state) goes
    at once."""
    state = _pruned(state or BudgetState(tat=now), now)
    mine = _index(state, slot)
    if mine is None:
        return state, 0.0
    entries = _entries(state)
    if len(entries) > policy.per_window:  # else fewer others than a window: no floor (_floor)
        others = [e for i, e in enumerate(entries) if i != mine and (e[1] > 0.0 or e[2] > 0.0)]
        floor = _floor(others, policy)
        if floor > now:
            return state, floor - now
    # Only a booking not sent yet can be waiting: the C-level `in` spares the scan most times.
    if 0.0 in state.sent[:mine] and any(_waiting(e, now) for e in entries[:mine]):
        return state, QUEUE_POLL_S
    return _evolve(state, sent=_replaced(state.sent, mine, now)), 0.0


def release(state: BudgetState | None, now: float, slot: float) -> BudgetState | None:
    """The call booked at ``slot`` got its answer at ``now`` (KIS has counted it by then)."""
    if state is None:
        return None
    mine = _index(state, slot)
    if mine is None:
        return state
    sent = _replaced(state.sent, mine, state.sent[mine] or now)
    return _evolve(state, sent=sent, done=_replaced(state.done, mine, now))


def _replaced(values: tuple[float, ...], index: int, value: float) -> tuple[float, ...]:
    items = list(values)
    items[index] = value
    return tuple(items)


def penalize(state: BudgetState | None, now: float, hold_s: float) -> BudgetState:
    """KIS answered EGW00201 at ``now``: no new slot before ``now + hold_s``, and slower for a while.

    Idempotent for processes that hit the limit together: ``max``, not a sum."""
    state = _pruned(state or BudgetState(tat=now), now)
    return _evolve(
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


_Entry = tuple[float, float, float]  # (slot, sent, done)


def _entries(state: BudgetState) -> list[_Entry]:
    return list(zip(state.starts, state.sent, state.done, strict=True))


def _index(state: BudgetState, slot: float) -> int | None:
    # The closest booking within SAME_SLOT_S, not the first: with a limit above 1000/s (the
    # benchmarks' pacing-off budget) several bookings lie within 1 ms, and taking the first one
    # marked another call's booking as sent, so the next call waited for one never to go out.
    best: int | None = None
    best_gap = SAME_SLOT_S
    for i in range(len(state.starts) - 1, -1, -1):  # newest first: a call's own booking is recent
        gap = abs(state.starts[i] - slot)
        if gap < best_gap:
            best, best_gap = i, gap
            if gap == 0.0:
                break  # nothing is closer than the slot itself
    return best


def _floor(entries: list[_Entry], policy: BudgetPolicy) -> float:
    """The earliest start leaving fewer than ``per_window`` of ``entries`` in the KIS second before it."""
    if len(entries) < policy.per_window:
        return -math.inf  # the window cannot be full: no need to sort the arrivals
    latest = sorted(_arrived_by(*e) for e in entries)
    return latest[-policy.per_window] + 1.0 + SAME_SLOT_S


def _arrived_by(slot: float, sent: float, done: float) -> float:
    """When KIS has certainly received the call (a guess while it has not reported back)."""
    if done > 0.0:
        return done
    return (sent if sent > 0.0 else slot) + UNREPORTED_S


def _waiting(entry: _Entry, now: float) -> bool:
    """True for a booking whose call has not gone out but whose caller may still be alive."""
    slot, sent, done = entry
    return sent == 0.0 and done == 0.0 and slot > now - ABANDONED_S


def _may_matter(entry: _Entry, now: float) -> bool:
    slot, sent, done = entry
    if sent == 0.0 and done == 0.0 and slot > now - WAITING_KEPT_S:
        return True  # its caller may still be waiting to start: it must find its booking
    return max(_arrived_by(*entry), slot) > now - 1.0


def _pruned(state: BudgetState, now: float) -> BudgetState:
    """Without the bookings that can no longer share a KIS second with a new call."""
    if not state.starts or min(state.starts) > now - 1.0:
        return state  # every booking is inside the last second, so each may matter (the usual case)
    keep = [i for i, e in enumerate(_entries(state)) if _may_matter(e, now)]
    if len(keep) == len(state.starts):
        return state  # nothing to drop: the same (frozen) value
    return _evolve(
        state,
        starts=tuple(state.starts[i] for i in keep),
        sent=tuple(state.sent[i] for i in keep),
        done=tuple(state.done[i] for i in keep),
    )


def _evolve(
    state: BudgetState,
    *,
    tat: float | None = None,
    starts: tuple[float, ...] | None = None,
    sent: tuple[float, ...] | None = None,
    done: tuple[float, ...] | None = None,
    slow_until: float | None = None,
    limit_per_s: float | None = None,
) -> BudgetState:
    """``attrs.evolve`` for BudgetState, written out: evolve introspects the class on every call
    (~4 us each, five per booked call on the pacing path)."""
    return BudgetState(
        state.tat if tat is None else tat,
        state.starts if starts is None else starts,
        state.sent if sent is None else sent,
        state.done if done is None else done,
        state.slow_until if slow_until is None else slow_until,
        state.limit_per_s if limit_per_s is None else limit_per_s,
    )


def _ahead(state: BudgetState, now: float) -> int:
    return sum(1 for s in state.starts if s > now)
