"""The GCRA rules on a fake clock: KIS never sees more than its limit in a second whatever the
delays, first come first served, refusals book nothing, EGW00201 holds everyone back.

The rules run two ways: the pure functions of gcra (the file budget) and memory.LiveState, which
changes one state in place (the in-process budget). Every property runs on both (``rules``), and
one more checks that both give the same answer and the same state after any sequence of steps.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.auth.call_budget.gcra import (
    GUARD,
    HORIZON_S,
    SLOW_FACTOR,
    SLOW_FOR_S,
    STARTS_KEPT,
    UNREPORTED_S,
    BudgetPolicy,
    BudgetState,
    Refusal,
    penalize,
    plausible,
    release,
    reserve,
    start,
    usage,
)
from runtime.auth.call_budget.memory import LiveState
from runtime.clock import FakeClock

LIMITS = st.sampled_from([2.0, 20.0, 0.5, 7.0])


class Rules(Protocol):
    """One key's state and the four rules on it, however they are run."""

    def reserve(self, now: float, max_wait: float) -> float | Refusal: ...
    def start(self, now: float, slot: float) -> float: ...
    def release(self, now: float, slot: float) -> None: ...
    def penalize(self, now: float, hold_s: float) -> None: ...
    def state(self) -> BudgetState | None: ...


class PureRules:
    """The pure functions of gcra, the state handed from one to the next."""

    def __init__(self, policy: BudgetPolicy) -> None:
        self.policy = policy
        self.current: BudgetState | None = None

    def reserve(self, now: float, max_wait: float) -> float | Refusal:
        outcome = reserve(self.current, now, self.policy, max_wait)
        if isinstance(outcome, Refusal):
            return outcome
        self.current = outcome.state
        return outcome.slot

    def start(self, now: float, slot: float) -> float:
        self.current, wait = start(self.current, now, slot, self.policy)
        return wait

    def release(self, now: float, slot: float) -> None:
        self.current = release(self.current, now, slot)

    def penalize(self, now: float, hold_s: float) -> None:
        self.current = penalize(self.current, now, hold_s)

    def state(self) -> BudgetState | None:
        return self.current


class LiveRules:
    """memory.LiveState, made on first use as the in-process budget makes it."""

    def __init__(self, policy: BudgetPolicy) -> None:
        self.policy = policy
        self.live: LiveState | None = None

    def _at(self, now: float) -> LiveState:
        if self.live is None:
            self.live = LiveState(self.policy, now)
        return self.live

    def reserve(self, now: float, max_wait: float) -> float | Refusal:
        return self._at(now).reserve(now, max_wait)

    def start(self, now: float, slot: float) -> float:
        return self._at(now).start(now, slot)

    def release(self, now: float, slot: float) -> None:
        if self.live is not None:
            self.live.release(now, slot)

    def penalize(self, now: float, hold_s: float) -> None:
        self._at(now).penalize(now, hold_s)

    def state(self) -> BudgetState | None:
        return None if self.live is None else self.live.snapshot()

    def take_free_slot(self, now: float) -> bool:
        """The in-process budget's first try; when it declines, it has changed nothing."""
        live = self._at(now)
        before = live.snapshot()
        if live.take_free_slot(now):
            return True
        assert live.snapshot() == before
        return False


def _slot(rules: Rules, now: float) -> float:
    outcome = rules.reserve(now, 3600)
    assert not isinstance(outcome, Refusal)
    return outcome


def _busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any window (t - 1, t], as KIS's sliding window counts them."""
    ordered = sorted(arrivals)
    return max(sum(1 for a in ordered[: i + 1] if a > end - 1.0) for i, end in enumerate(ordered))


def _simulate(
    rules: Rules,
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
    # (time, kind 0 book / 1 start / 2 answer, caller)
    events = [(1000.0 + i * 1e-4, 0, i) for i in range(callers)]
    booked: dict[int, float] = {}
    arrivals: list[float] = []
    counts = [0] * callers
    calls = itertools.count()
    while len(arrivals) < len(late):
        now, kind, who = heapq.heappop(events)
        if kind == 0:
            booked[who] = slot = _slot(rules, now)
            heapq.heappush(events, (slot + late[next(calls) % len(late)], 1, who))
        elif kind == 1:
            wait = rules.start(now, booked[who])
            if wait > 0:
                heapq.heappush(events, (now + wait, 1, who))
                continue
            arrivals.append(now + network_s)
            counts[who] += 1
            heapq.heappush(events, (now + network_s + answer_s, 2, who))
        else:
            rules.release(now, booked.pop(who))
            heapq.heappush(events, (now + pauses[len(arrivals) % len(pauses)], 0, who))
    return arrivals, counts


Engine = type[PureRules] | type[LiveRules]
BOTH = pytest.mark.parametrize("engine", [PureRules, LiveRules], ids=["pure", "live"])


@BOTH
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
    engine: Engine,
    limit: float,
    callers: int,
    late: list[float],
    answer_s: float,
    network_s: float,
    pauses: list[float],
) -> None:
    """The one assumption: a call that went out reaches KIS within UNREPORTED_S."""
    policy = BudgetPolicy(limit)
    arrivals, _counts = _simulate(engine(policy), callers, late, answer_s, pauses, network_s)
    assert _busiest_second(arrivals) <= policy.per_window


@BOTH
@settings(max_examples=100, deadline=None)
@given(limit=LIMITS, callers=st.integers(2, 8), answer_s=st.floats(0.001, 0.2))
def test_callers_that_ask_again_after_each_answer_share_the_slots_evenly(
    engine: Engine, limit: float, callers: int, answer_s: float
) -> None:
    rules = engine(BudgetPolicy(limit))
    _arrivals, counts = _simulate(rules, callers, [0.0] * (callers * 20), answer_s, [0.0])
    assert max(counts) - min(counts) <= 1


@BOTH
@settings(max_examples=200, deadline=None)
@given(limit=LIMITS, gaps=st.lists(st.floats(0, 0.02), min_size=1, max_size=60))
def test_slots_are_granted_in_the_order_they_were_asked_for(
    engine: Engine, limit: float, gaps: list[float]
) -> None:
    clock = FakeClock()
    rules = engine(BudgetPolicy(limit))
    slots = []
    for gap in gaps:
        clock.advance(gap)  # callers arrive faster than slots free up
        slots.append(_slot(rules, clock.monotonic()))
    assert slots == sorted(slots)
    assert len(set(slots)) == len(slots)


@BOTH
@settings(max_examples=200, deadline=None)
@given(limit=LIMITS, queued=st.integers(min_value=1, max_value=30), max_wait=st.floats(0, 5))
def test_a_refusal_books_nothing_and_says_how_long_the_queue_is(
    engine: Engine, limit: float, queued: int, max_wait: float
) -> None:
    rules, twin = engine(BudgetPolicy(limit)), engine(BudgetPolicy(limit))
    for _ in range(queued):
        _slot(rules, 1000.0)
        _slot(twin, 1000.0)
    before = rules.state()
    outcome = rules.reserve(1000.0, max_wait)
    offered = _slot(twin, 1000.0)  # what a caller with time to wait gets
    if offered - 1000.0 > max_wait:
        assert outcome == Refusal(offered - 1000.0, queued - 1)
        assert rules.state() == before, "a refusal books nothing"
    else:
        assert outcome == offered


@BOTH
@pytest.mark.parametrize("limit", [2.0, 20.0])
def test_one_caller_asking_without_pause_gets_at_least_95_percent_of_the_limit(
    engine: Engine, limit: float
) -> None:
    policy = BudgetPolicy(limit)
    arrivals, _counts = _simulate(engine(policy), 1, [0.0] * int(limit * 60), 0.003, [0.0])
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 0.95 * limit <= rate <= limit
    assert rate == pytest.approx(limit / (1 + GUARD), rel=0.02)


@BOTH
def test_a_late_call_pushes_the_call_one_window_later_back_by_as_much(engine: Engine) -> None:
    arrivals, _counts = _simulate(engine(BudgetPolicy(20.0)), 1, [0.2] + [0.0] * 20, 0.002, [0.0])
    assert arrivals[20] >= arrivals[0] + 1.0


@BOTH
def test_a_call_whose_slot_came_while_late_calls_fill_the_second_waits_at_its_start(engine: Engine) -> None:
    rules = engine(BudgetPolicy(2.0))
    slots = [_slot(rules, 1000.0) for _ in range(3)]  # booked together, far ahead: 1000, 1000.505, 1001.01
    assert rules.start(1000.4, slots[0]) == 0.0  # the first goes 400 ms late
    assert rules.start(1000.6, slots[1]) == 0.0
    wait = rules.start(slots[2], slots[2])
    assert wait == pytest.approx(1000.4 + UNREPORTED_S + 1.0 + 1e-3 - slots[2])
    rules.release(1000.41, slots[0])  # KIS answered 10 ms after it went out
    assert rules.start(1001.411, slots[2]) == 0.0


@BOTH
def test_egw00201_holds_everyone_back_and_slows_the_budget_for_a_while(engine: Engine) -> None:
    policy = BudgetPolicy(20.0)
    rules = engine(policy)
    first = _slot(rules, 1000.0)
    rules.release(1000.0, first)
    rules.penalize(1000.0, 1.0)
    held = rules.state()
    rules.penalize(1000.0, 1.0)
    assert rules.state() == held, "processes hit together do not stack holds"
    one = _slot(rules, 1000.0)
    assert one - 1000.0 >= 1.0
    two = _slot(rules, 1000.0)
    assert two - one == pytest.approx(SLOW_FACTOR * policy.interval), "slower after EGW00201"
    later = _slot(rules, 1000.0 + SLOW_FOR_S + 2)
    after = _slot(rules, 1000.0 + SLOW_FOR_S + 2)
    assert after - later == pytest.approx(policy.interval), "back to full speed"


@BOTH
def test_usage_counts_the_last_second_and_the_queue(engine: Engine) -> None:
    policy = BudgetPolicy(20.0)
    rules = engine(policy)
    for _ in range(5):
        _slot(rules, 1000.0)
    state = rules.state()
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


# --- the live state gives the pure functions' answers ------------------------------------------------

# Steps: (seconds later, what, which booking or how long). Gaps reach the rules' horizons: the KIS
# second, ABANDONED_S and WAITING_KEPT_S.
_GAPS = st.one_of(st.just(0.0), st.floats(0, 0.01), st.floats(0, 1.5), st.floats(0, 70))
_STEPS = st.lists(
    st.tuples(
        _GAPS,
        st.sampled_from(["book", "book_and_start", "start", "release", "penalize"]),
        st.integers(0, 10_000),
        st.sampled_from([0.0, 1e-4, -1e-4, 5e-4, -9e-4, 2e-3]),  # near a booked slot, or not
        st.one_of(st.floats(0, 5), st.just(math.inf)),
    ),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(limit=st.sampled_from([0.5, 2.0, 7.0, 20.0, 200.0, 300.0, 2000.0, 1e9]), steps=_STEPS)
def test_the_live_state_answers_as_the_pure_functions_step_for_step(
    limit: float, steps: list[tuple[float, str, int, float, float]]
) -> None:
    """Same answers, same state after every step, for limits whose window can fill and for
    limits above STARTS_KEPT a second (300, 2000, 1e9), whose window the rules never fill."""
    policy = BudgetPolicy(limit)
    pure, live = PureRules(policy), LiveRules(policy)
    now, slots = 1000.0, [1000.0]
    for gap, what, pick, near, budget in steps:
        now += gap
        slot = slots[pick % len(slots)] + near
        answers = [_step(rules, what, now, slot, budget, slots) for rules in (pure, live)]
        assert answers[0] == answers[1], (what, now)
        assert live.state() == pure.state(), (what, now)


def _step(rules: Rules, what: str, now: float, slot: float, budget: float, slots: list[float]) -> object:
    if what == "book_and_start" and isinstance(rules, LiveRules) and rules.take_free_slot(now):
        slots.append(now)
        return now, 0.0  # as reserve at a slot free now, then start at once, would answer
    if what in ("book", "book_and_start"):
        outcome = rules.reserve(now, budget)
        if isinstance(outcome, Refusal):
            return outcome
        if isinstance(rules, LiveRules):
            slots.append(outcome)  # one list for both: the live rules run second
        if what == "book_and_start" and outcome == now:  # as the budgets' acquire does
            return outcome, rules.start(now, outcome)
        return outcome
    if what == "start":
        return rules.start(now, slot)
    if what == "release":
        rules.release(now, slot)
        return None
    rules.penalize(now, budget if math.isfinite(budget) else 0.5)
    return None


@pytest.mark.parametrize("limit", [200.0, 1e9])
def test_the_live_state_drops_the_oldest_booking_past_starts_kept_as_the_pure_functions_do(
    limit: float,
) -> None:
    """More bookings than STARTS_KEPT at once (all in the future at 200/s, all in the last second
    at 1e9/s), some started and answered, then the oldest leave as time moves on."""
    policy = BudgetPolicy(limit)
    pure, live = PureRules(policy), LiveRules(policy)
    slots: list[float] = []
    now = 1000.0
    for k in range(STARTS_KEPT + 60):
        now += 1e-6 * (k % 3 + (limit > STARTS_KEPT))  # at 1e9/s every slot is free: the fast path
        answers = [_step(rules, "book_and_start", now, 0.0, math.inf, slots) for rules in (pure, live)]
        assert answers[0] == answers[1]
        if k % 7 == 0:
            for rules in (pure, live):
                rules.start(now, slots[k // 2])
                rules.release(now + 1e-4, slots[k // 3])
        assert live.state() == pure.state()
    for later in (0.5, 1.2, 6.0, 61.0):
        assert pure.start(now + later, slots[-1]) == live.start(now + later, slots[-1])
        assert live.state() == pure.state()
    state = pure.state()
    assert state is not None
    assert len(state.starts) < STARTS_KEPT


def test_the_live_state_takes_the_pure_path_where_pruning_or_a_second_start_decides() -> None:
    """Two rare turns, both engines: a booking a second old (answered late) whose pruning frees
    a caller with no time to wait, and a booking asked to start twice while the window is full."""
    policy = BudgetPolicy(2.0)
    pure, live = PureRules(policy), LiveRules(policy)
    for rules in (pure, live):
        first, second = _slot(rules, 1000.0), _slot(rules, 1000.0)  # 1000 and 1000.505
        assert rules.start(first, first) == 0.0
        assert rules.start(second, second) == 0.0
        assert rules.start(second + 0.001, first) == 0.0  # asked again: its own arrival is no obstacle
        rules.release(1000.2, first)  # answered late
        rules.release(1000.51, second)
        # 1001.2005: the first one's arrival (1000.2) left the KIS second; before pruning it
        # would hold the slot back to 1001.201, which a caller with no time left cannot wait for.
        assert rules.reserve(1001.2005, 0.0) == 1001.2005
    assert live.state() == pure.state()
