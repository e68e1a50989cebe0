"""The pure GCRA rules on a fake clock: KIS never sees more than its limit in a second whatever the
delays, first come first served, refusals book nothing, EGW00201 holds everyone back."""

from __future__ import annotations

import heapq
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.auth.call_budget.gcra import (
    GUARD,
    HORIZON_S,
    SLOW_FACTOR,
    SLOW_FOR_S,
    UNREPORTED_S,
    BudgetPolicy,
    BudgetState,
    Grant,
    Refusal,
    penalize,
    plausible,
    release,
    reserve,
    start,
    usage,
)
from runtime.clock import FakeClock

LIMITS = st.sampled_from([2.0, 20.0, 0.5, 7.0])


def _book(state: BudgetState | None, now: float, policy: BudgetPolicy) -> Grant:
    outcome = reserve(state, now, policy, max_wait=3600)
    assert isinstance(outcome, Grant)
    return outcome


def _busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any window (t - 1, t], as KIS's sliding window counts them."""
    ordered = sorted(arrivals)
    return max(sum(1 for a in ordered[: i + 1] if a > end - 1.0) for i, end in enumerate(ordered))


def _simulate(
    policy: BudgetPolicy,
    callers: int,
    late: list[float],
    answer_s: float,
    pauses: list[float],
    network_s: float = 0.002,
) -> tuple[list[float], list[int]]:
    """Callers that each book, wake ``late[k]`` after their slot (a busy machine), ask to start
    (waiting as long as they are told), reach KIS ``network_s`` later, get the answer ``answer_s``
    after that, report it, pause, and book again. Events run in time order on one shared state,
    as the adapters run them. Returns KIS's arrival times and the calls per caller."""
    state: BudgetState | None = None
    # (time, kind 0 book / 1 start / 2 answer, caller)
    events = [(1000.0 + i * 1e-4, 0, i) for i in range(callers)]
    booked: dict[int, float] = {}
    arrivals: list[float] = []
    counts = [0] * callers
    calls = itertools.count()
    while len(arrivals) < len(late):
        now, kind, who = heapq.heappop(events)
        if kind == 0:
            grant = _book(state, now, policy)
            state = grant.state
            booked[who] = grant.slot
            heapq.heappush(events, (grant.slot + late[next(calls) % len(late)], 1, who))
        elif kind == 1:
            state, wait = start(state, now, booked[who], policy)
            if wait > 0:
                heapq.heappush(events, (now + wait, 1, who))
                continue
            arrivals.append(now + network_s)
            counts[who] += 1
            heapq.heappush(events, (now + network_s + answer_s, 2, who))
        else:
            state = release(state, now, booked.pop(who))
            heapq.heappush(events, (now + pauses[len(arrivals) % len(pauses)], 0, who))
    return arrivals, counts


@settings(max_examples=200, deadline=None)
@given(
    limit=LIMITS,
    callers=st.integers(1, 8),
    late=st.lists(st.floats(0, 0.5), min_size=5, max_size=80),
    answer_s=st.floats(0.001, 0.3),
    network_s=st.floats(0, UNREPORTED_S),
    pauses=st.lists(st.floats(0, 1.0), min_size=1, max_size=5),
)
def test_kis_never_sees_more_than_the_limit_in_a_second_however_late_processes_wake(
    limit: float, callers: int, late: list[float], answer_s: float, network_s: float, pauses: list[float]
) -> None:
    """The one assumption: a call that went out reaches KIS within UNREPORTED_S."""
    policy = BudgetPolicy(limit)
    arrivals, _counts = _simulate(policy, callers, late, answer_s, pauses, network_s)
    assert _busiest_second(arrivals) <= policy.per_window


@settings(max_examples=100, deadline=None)
@given(limit=LIMITS, callers=st.integers(2, 8), answer_s=st.floats(0.001, 0.2))
def test_callers_that_ask_again_after_each_answer_share_the_slots_evenly(
    limit: float, callers: int, answer_s: float
) -> None:
    _arrivals, counts = _simulate(BudgetPolicy(limit), callers, [0.0] * (callers * 20), answer_s, [0.0])
    assert max(counts) - min(counts) <= 1


@settings(max_examples=200, deadline=None)
@given(limit=LIMITS, gaps=st.lists(st.floats(0, 0.02), min_size=1, max_size=60))
def test_slots_are_granted_in_the_order_they_were_asked_for(limit: float, gaps: list[float]) -> None:
    clock = FakeClock()
    state: BudgetState | None = None
    slots = []
    for gap in gaps:
        clock.advance(gap)  # callers arrive faster than slots free up
        grant = _book(state, clock.monotonic(), BudgetPolicy(limit))
        state = grant.state
        slots.append(grant.slot)
    assert slots == sorted(slots)
    assert len(set(slots)) == len(slots)


@settings(max_examples=200, deadline=None)
@given(limit=LIMITS, queued=st.integers(min_value=1, max_value=30), max_wait=st.floats(0, 5))
def test_a_refusal_books_nothing_and_says_how_long_the_queue_is(
    limit: float, queued: int, max_wait: float
) -> None:
    policy = BudgetPolicy(limit)
    state: BudgetState | None = None
    for _ in range(queued):
        state = _book(state, 1000.0, policy).state
    outcome = reserve(state, 1000.0, policy, max_wait=max_wait)
    offered = _book(state, 1000.0, policy)  # what a caller with time to wait gets
    if offered.wait > max_wait:
        assert outcome == Refusal(offered.wait, queued - 1)
    else:
        assert isinstance(outcome, Grant)
        assert outcome.wait == offered.wait


@pytest.mark.parametrize("limit", [2.0, 20.0])
def test_one_caller_asking_without_pause_gets_at_least_95_percent_of_the_limit(limit: float) -> None:
    policy = BudgetPolicy(limit)
    arrivals, _counts = _simulate(policy, 1, [0.0] * int(limit * 60), 0.003, [0.0])
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 0.95 * limit <= rate <= limit
    assert rate == pytest.approx(limit / (1 + GUARD), rel=0.02)


def test_a_late_call_pushes_the_call_one_window_later_back_by_as_much() -> None:
    policy = BudgetPolicy(20.0)
    arrivals, _counts = _simulate(policy, 1, [0.2] + [0.0] * 20, 0.002, [0.0])
    assert arrivals[20] >= arrivals[0] + 1.0


def test_a_call_whose_slot_came_while_late_calls_fill_the_second_waits_at_its_start() -> None:
    policy = BudgetPolicy(2.0)
    state: BudgetState | None = None
    slots: list[float] = []
    for _ in range(3):  # booked together, far ahead: 1000, 1000.505, 1001.031...
        grant = _book(state, 1000.0, policy)
        state, slots = grant.state, [*slots, grant.slot]
    state, wait = start(state, 1000.4, slots[0], policy)  # the first goes 400 ms late
    assert wait == 0.0
    state, wait = start(state, 1000.6, slots[1], policy)
    assert wait == 0.0
    state, wait = start(state, slots[2], slots[2], policy)
    assert wait == pytest.approx(1000.4 + UNREPORTED_S + 1.0 + 1e-3 - slots[2])
    state = release(state, 1000.41, slots[0])  # KIS answered 10 ms after it went out
    state, wait = start(state, 1001.411, slots[2], policy)
    assert wait == 0.0


def test_egw00201_holds_everyone_back_and_slows_the_budget_for_a_while() -> None:
    policy = BudgetPolicy(20.0)
    first = _book(None, 1000.0, policy)
    state = release(first.state, 1000.0, first.slot)
    held = penalize(state, 1000.0, hold_s=1.0)
    assert penalize(held, 1000.0, hold_s=1.0) == held, "processes hit together do not stack holds"
    one = _book(held, 1000.0, policy)
    assert one.wait >= 1.0
    two = _book(one.state, 1000.0, policy)
    assert two.slot - one.slot == pytest.approx(SLOW_FACTOR * policy.interval), "slower after EGW00201"
    later = _book(two.state, 1000.0 + SLOW_FOR_S + 2, policy)
    after = _book(later.state, 1000.0 + SLOW_FOR_S + 2, policy)
    assert after.slot - later.slot == pytest.approx(policy.interval), "back to full speed"


def test_usage_counts_the_last_second_and_the_queue() -> None:
    policy = BudgetPolicy(20.0)
    state: BudgetState | None = None
    for _ in range(5):
        state = _book(state, 1000.0, policy).state
    assert state is not None
    used, queued, queue_s = usage(state, 1000.0 + 1.5 * policy.interval)
    assert (used, queued) == (2, 3)
    assert queue_s == pytest.approx(state.tat - 1000.0 - 1.5 * policy.interval)
    assert usage(None, 1000.0) == (0, 0, 0.0)


def test_a_state_from_another_clock_is_implausible() -> None:
    assert plausible(BudgetState(tat=1000.0), 1000.0)
    assert not plausible(BudgetState(tat=1000.0 + HORIZON_S + 1), 1000.0)
    assert not plausible(BudgetState(tat=float("nan")), 1000.0)
    assert not plausible(BudgetState(tat=1000.0, starts=(1.0,), sent=(0.0,), done=()), 1000.0)
