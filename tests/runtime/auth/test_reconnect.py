"""Reconnect rules: jittered exponential backoff and the breaker (pure functions, hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.auth.reconnect import MAX_DELAY_S, Breaker, backoff_delay

draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=0, max_value=10_000)


@given(draws)
def test_the_first_retry_comes_within_one_second(draw: float) -> None:
    assert 0.0 <= backoff_delay(0, draw) < 1.0


@given(attempts, draws)
def test_no_pause_is_negative_or_longer_than_the_cap(attempt: int, draw: float) -> None:
    assert 0.0 <= backoff_delay(attempt, draw) <= MAX_DELAY_S


@given(attempts, draws, draws)
def test_pauses_grow_with_the_attempt_until_the_cap(attempt: int, low: float, high: float) -> None:
    # Equal jitter: attempt n's shortest pause is at least attempt n-1's longest half.
    if attempt >= 1:
        assert backoff_delay(attempt + 1, min(low, high)) >= backoff_delay(attempt, 0.0)
    assert backoff_delay(40, 0.0) == MAX_DELAY_S / 2


def test_jitter_spreads_clients_of_one_server() -> None:
    assert len({round(backoff_delay(3, d / 10), 6) for d in range(10)}) == 10


@given(st.lists(st.floats(min_value=0, max_value=10_000), min_size=1, max_size=60))
def test_the_breaker_lets_at_most_max_failures_through_in_any_window(gaps: list[float]) -> None:
    breaker = Breaker(max_failures=5, window_s=60.0)
    now, allowed = 0.0, []
    for gap in gaps:
        now += gap
        if breaker.is_open(now):
            continue  # the session stops here in real life; later failures may not be counted
        allowed.append(now)
        breaker = breaker.record_failure(now)
    for i, start in enumerate(allowed):
        in_window = [t for t in allowed[i:] if t - start < 60.0]
        assert len(in_window) <= 5


def test_a_stable_connection_clears_the_failures_and_a_short_one_counts() -> None:
    breaker = Breaker(max_failures=2, window_s=60.0, stable_s=20.0)
    breaker = breaker.record_connected(0.0, 1.0)
    assert not breaker.is_open(1.0)
    breaker = breaker.record_connected(2.0, 3.0)
    assert breaker.is_open(3.0)
    assert not breaker.is_open(70.0)  # the window moved on
    assert breaker.record_connected(10.0, 40.0).failures == ()
