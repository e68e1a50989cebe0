"""The token cache's lock-free path runs on the monotonic clock and re-reads the wall clock.

A hit compares one monotonic reading (an aware ``datetime.now`` costs more than the rest of the
hit). Token expiry is measured on the wall clock, so the lock-free path is trusted for at most
one second of monotonic time before the wall clock is read again under the lock. Properties on
a fake clock whose wall clock can also be stepped (an NTP correction) without moving monotonic
time.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.support import FakeBroker
from runtime.auth.freshness import refresh_at
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken
from runtime.clock import FakeClock

MARGIN = timedelta(minutes=10)
LIFETIME = timedelta(hours=24)
RECHECK_S = 1.0

# One step: let time pass (both clocks), step the wall clock alone, or ask for a token.
_advance = st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=6 * 3600.0))
_step_wall = st.tuples(st.just("step_wall"), st.floats(min_value=-3600.0, max_value=30 * 3600.0))
_get = st.tuples(st.just("get"), st.just(0.0))
_steps = st.lists(st.one_of(_advance, _step_wall, _get, _get), min_size=1, max_size=40)


def _cache(clock: FakeClock) -> tuple[TokenCache, FakeBroker]:
    broker = FakeBroker(clock, lifetime=LIFETIME)
    return TokenCache(broker, InMemoryTokenStore(), clock, margin=MARGIN), broker


def _fresh(token: AccessToken, clock: FakeClock) -> bool:
    return clock.now() < refresh_at(token, MARGIN)


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_without_wall_steps_every_token_handed_out_is_fresh(steps: list[tuple[str, float]]) -> None:
    clock = FakeClock()
    cache, _broker = _cache(clock)
    for action, amount in steps:
        if action == "advance":
            clock.advance(amount)
        elif action == "get":
            assert _fresh(cache.get(), clock)


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_a_stepped_wall_clock_is_noticed_within_a_second_of_monotonic_time(
    steps: list[tuple[str, float]],
) -> None:
    clock = FakeClock()
    cache, _broker = _cache(clock)
    last_step_at = None  # monotonic time of the last wall step
    for action, amount in steps:
        if action == "advance":
            clock.advance(amount)
        elif action == "step_wall":
            clock.set_wall(clock.now() + timedelta(seconds=amount))
            last_step_at = clock.monotonic()
        else:
            token = cache.get()
            settled = last_step_at is None or clock.monotonic() - last_step_at >= RECHECK_S
            if settled:
                assert _fresh(token, clock)


def test_a_wall_step_past_expiry_gets_a_new_token_once_a_second_has_passed() -> None:
    clock = FakeClock()
    cache, broker = _cache(clock)
    first = cache.get()
    assert cache.get() is first  # the lock-free path
    clock.set_wall(clock.now() + LIFETIME)  # the wall clock was a day behind
    clock.advance(RECHECK_S)
    second = cache.get()
    assert second.value != first.value
    assert broker.issue_calls == 2


def test_a_hit_reads_no_wall_clock_between_rechecks() -> None:
    class CountingClock(FakeClock):
        wall_reads = 0

        def now(self):  # type: ignore[no-untyped-def]
            self.wall_reads += 1
            return super().now()

    clock = CountingClock()
    cache, _broker = _cache(clock)
    cache.get()
    clock.advance(0.01)
    cache.get()  # the first hit after the issue checks the entry on the wall clock
    reads = clock.wall_reads
    for _ in range(100):
        cache.get()
        clock.advance(0.001)  # 0.1 s in all: inside one recheck period
    assert clock.wall_reads == reads
    clock.advance(RECHECK_S)
    cache.get()
    assert clock.wall_reads == reads + 1
