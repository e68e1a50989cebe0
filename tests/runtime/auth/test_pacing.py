"""Per-scope pacing: a burst never exceeds KIS's per-second limit, and EGW00201 is retried for GET only."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.auth.pacing import Pacer
from runtime.auth.session import KISRuntime
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken, BrokerRequest, BrokerResponse, Mode
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.errors import CallRateLimitedError
from runtime.settings import DEFAULT_MAX_RPS
from tests.support.fakes import FakeBroker
from tests.support.kis import PRICE_PATH


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 2.0, 15.0, 20.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=1.5, allow_nan=False), min_size=1, max_size=60),
)
def test_no_one_second_window_ever_holds_more_starts_than_the_limit(rate: float, gaps: list[float]) -> None:
    clock = FakeClock()
    pacer = Pacer(clock, rate)
    starts: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        pacer.acquire(Deadline.after(clock, 3600))
        starts.append(clock.monotonic())
    window = 1.0 if rate >= 1 else 1.0 / rate
    allowed = max(1, int(rate))
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s - start < window]
        assert len(in_window) <= allowed


def test_a_burst_is_spread_instead_of_refused() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, DEFAULT_MAX_RPS[Mode.VTS])
    waits = [pacer.acquire(Deadline.after(clock, 60)) for _ in range(6)]
    assert waits[:2] == [0.0, 0.0]
    assert all(w > 0.9 for w in waits[2::2])
    assert clock.monotonic() - 1000 == pytest.approx(2 * 1.05, abs=0.01)


def test_a_wait_longer_than_the_budget_is_a_typed_error_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(clock, 1.0)
    pacer.acquire(Deadline.after(clock, 10))
    with pytest.raises(CallRateLimitedError) as info:
        pacer.acquire(Deadline.after(clock, 0.1))
    assert info.value.retry_after > timedelta(seconds=0.1)
    assert clock.monotonic() == 1000.0  # nothing was slept


class RateLimitedBroker(FakeBroker):
    """Answers EGW00201 to the first ``limited`` sends."""

    def __init__(self, clock: FakeClock, limited: int) -> None:
        super().__init__(clock)
        self.limited = limited
        self.send_times: list[float] = []

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        self.send_times.append(self._clock.monotonic())
        if self.limited > 0:
            self.limited -= 1
            self.sent.append((request, token))
            raise CallRateLimitedError(
                "초당 거래건수를 초과하였습니다.", retry_after=timedelta(seconds=1), code="EGW00201"
            )
        return super().send(request, token, deadline=deadline)


def _runtime(clock: FakeClock, broker: FakeBroker) -> KISRuntime:
    cache = TokenCache(broker, InMemoryTokenStore(), clock)
    return KISRuntime(broker, cache, clock, call_deadline_s=20)


def test_egw00201_on_a_get_is_waited_out_and_retried_within_the_deadline() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=2)
    answer = _runtime(clock, broker).call("GET", PRICE_PATH, tr_id="FHKST01010100")
    assert answer.status == 200
    assert len(broker.sent) == 3


def test_egw00201_that_persists_surfaces_as_a_typed_error_within_the_deadline() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=100)
    started = clock.monotonic()
    with pytest.raises(CallRateLimitedError):
        _runtime(clock, broker).call("GET", PRICE_PATH, tr_id="FHKST01010100")
    # Waits of 1, 2, 4, 8 s (x1.0-1.5 jitter) while they fit in the 20 s deadline: 4 or 5 tries.
    assert 4 <= len(broker.sent) <= 5
    assert clock.monotonic() - started < 20


def test_egw00201_waits_grow_and_carry_jitter() -> None:
    runs: list[list[float]] = []
    for _ in range(5):
        clock = FakeClock()
        broker = RateLimitedBroker(clock, limited=3)
        _runtime(clock, broker).call("GET", PRICE_PATH, tr_id="FHKST01010100")
        runs.append([round(b - a, 3) for a, b in itertools.pairwise(broker.send_times)])
    for gaps in runs:
        assert len(gaps) == 3
        for gap, base in zip(gaps, (1, 2, 4), strict=True):
            assert base <= gap <= base * 1.5 + 0.06  # + the pacer's guard
    assert len({tuple(gaps) for gaps in runs}) > 1  # jitter: runs do not retry in step


def test_egw00201_on_a_post_is_never_retried() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=1)
    with pytest.raises(CallRateLimitedError):
        _runtime(clock, broker).call("POST", "/uapi/hashkey", tr_id="HASHKEY0", body={"a": "b"})
    assert len(broker.sent) == 1
