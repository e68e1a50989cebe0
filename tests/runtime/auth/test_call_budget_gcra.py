"""The pure GCRA rules: no KIS second ever over the limit, first come first served, refusals book nothing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.auth.call_budget.gcra import (
    GUARD,
    HORIZON_S,
    SLOW_FOR_S,
    BudgetPolicy,
    BudgetState,
    Grant,
    Refusal,
    penalize,
    plausible,
    reserve,
    usage,
)
from runtime.clock import FakeClock

LIMITS = st.sampled_from([2.0, 20.0, 0.5, 7.0])
GAPS = st.lists(st.floats(min_value=0, max_value=1.5, allow_nan=False), min_size=1, max_size=80)


def _book(state: BudgetState | None, now: float, policy: BudgetPolicy) -> Grant:
    outcome = reserve(state, now, policy, max_wait=3600)
    assert isinstance(outcome, Grant)
    return outcome


@settings(max_examples=300, deadline=None)
@given(limit=LIMITS, gaps=GAPS)
def test_no_one_second_window_ever_holds_more_slots_than_the_limit(limit: float, gaps: list[float]) -> None:
    clock = FakeClock()
    policy = BudgetPolicy(limit)
    state: BudgetState | None = None
    slots: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        grant = _book(state, clock.monotonic(), policy)
        state = grant.state
        slots.append(clock.monotonic() + grant.wait)
    for i, start in enumerate(slots):
        in_window = [s for s in slots[i:] if s - start < 1.0]
        assert len(in_window) <= max(1, int(limit))
    # And with the guard: any two slots are at least one interval apart.
    assert all(b - a >= policy.interval - 1e-9 for a, b in itertools.pairwise(slots))


@settings(max_examples=200, deadline=None)
@given(limit=LIMITS, gaps=GAPS)
def test_slots_are_granted_in_the_order_they_were_asked_for(limit: float, gaps: list[float]) -> None:
    clock = FakeClock()
    state: BudgetState | None = None
    slots = []
    for gap in gaps:
        clock.advance(gap * 0.01)  # callers arrive faster than slots free up
        grant = _book(state, clock.monotonic(), BudgetPolicy(limit))
        state = grant.state
        slots.append(clock.monotonic() + grant.wait)
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
    assert state is not None
    outcome = reserve(state, 1000.0, policy, max_wait=max_wait)
    first_free = state.tat - 1000.0
    if first_free > max_wait:
        assert outcome == Refusal(first_free, queued - 1)
    else:
        assert isinstance(outcome, Grant)
        assert outcome.wait == pytest.approx(first_free)


@pytest.mark.parametrize("limit", [2.0, 20.0])
def test_one_caller_asking_without_pause_gets_at_least_95_percent_of_the_limit(limit: float) -> None:
    clock = FakeClock()
    policy = BudgetPolicy(limit)
    state: BudgetState | None = None
    started = clock.monotonic()
    for _ in range(int(limit * 60)):
        grant = _book(state, clock.monotonic(), policy)
        state = grant.state
        clock.sleep(grant.wait)
        clock.advance(0.003)  # the call itself
    rate = limit * 60 / (clock.monotonic() - started)
    assert 0.95 * limit <= rate <= limit
    assert rate == pytest.approx(limit / (1 + GUARD), rel=0.02)


@settings(max_examples=50, deadline=None)
@given(processes=st.integers(min_value=2, max_value=8), limit=LIMITS, latency=st.floats(0.001, 0.2))
def test_n_callers_that_ask_again_after_each_call_share_the_slots_evenly(
    processes: int, limit: float, latency: float
) -> None:
    """Each simulated process books, waits for its slot, calls, books again: round robin."""
    policy = BudgetPolicy(limit)
    state: BudgetState | None = None
    ready = [1000.0 + i * 0.0001 for i in range(processes)]  # when each next asks
    counts = [0] * processes
    for _ in range(processes * 30):
        who = min(range(processes), key=lambda i: ready[i])  # the earliest asker books first
        grant = _book(state, ready[who], policy)
        state = grant.state
        counts[who] += 1
        ready[who] += grant.wait + latency
    assert max(counts) - min(counts) <= 1


def test_egw00201_holds_everyone_back_and_slows_the_budget_for_a_while() -> None:
    policy = BudgetPolicy(20.0)
    state = _book(None, 1000.0, policy).state
    held = penalize(state, 1000.0, hold_s=1.0)
    assert penalize(held, 1000.0, hold_s=1.0) == held, "processes hit together do not stack holds"
    first = _book(held, 1000.0, policy)
    assert first.wait == pytest.approx(1.0)
    second = _book(first.state, 1000.0, policy)
    assert second.wait - first.wait == pytest.approx(2 * policy.interval), "twice as slow after EGW00201"
    later = _book(second.state, 1000.0 + SLOW_FOR_S + 2, policy)
    after = _book(later.state, 1000.0 + SLOW_FOR_S + 2, policy)
    assert after.wait - later.wait == pytest.approx(policy.interval), "back to full speed"


def test_usage_counts_the_last_second_and_the_queue() -> None:
    policy = BudgetPolicy(2.0)
    state: BudgetState | None = None
    for _ in range(5):
        state = _book(state, 1000.0, policy).state
    # Slots at 1000, 1000.515, 1001.03, 1001.545, 1002.06
    used, queued, queue_s = usage(state, 1000.6)
    assert (used, queued) == (2, 3)
    assert queue_s == pytest.approx(1002.575 - 1000.6, abs=0.001)
    assert usage(None, 1000.0) == (0, 0, 0.0)


def test_a_state_from_another_clock_is_implausible() -> None:
    assert plausible(BudgetState(tat=1000.0), 1000.0)
    assert not plausible(BudgetState(tat=1000.0 + HORIZON_S + 1), 1000.0)
    assert not plausible(BudgetState(tat=float("nan")), 1000.0)
