"""KISRuntime books every call from the key's budget; EGW00201 slows the budget, GETs book again."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from runtime.auth.call_budget.gcra import SLOW_FACTOR, BudgetPolicy
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.session import KISRuntime
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken, BrokerRequest, BrokerResponse, Mode
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.errors import CallBudgetExhaustedError, CallRateLimitedError
from tests.support.fakes import FakeBroker

PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"


class RateLimitedBroker(FakeBroker):
    """Answers EGW00201 to the first ``limited`` sends; records when each send went out."""

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


def _runtime(clock: FakeClock, broker: FakeBroker, budget: InProcessCallBudget | None = None) -> KISRuntime:
    cache = TokenCache(broker, InMemoryTokenStore(), clock)
    return KISRuntime(broker, cache, clock, call_deadline_s=20, call_budget=budget)


def test_the_default_budget_is_the_keys_documented_limit() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=0)
    runtime = _runtime(clock, broker)
    for _ in range(21):
        runtime.call("GET", PRICE, tr_id="FHKST01010100")
    gaps = [b - a for a, b in itertools.pairwise(broker.send_times)]
    assert gaps == pytest.approx([BudgetPolicy(2.0).interval] * 20)  # VTS: 2/s less the guard
    assert broker.scope.mode is Mode.VTS


def test_egw00201_on_a_get_slows_the_budget_and_books_again_within_the_deadline() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=2)
    budget = InProcessCallBudget(clock, 2.0)
    answer = _runtime(clock, broker, budget).call("GET", PRICE, tr_id="FHKST01010100")
    assert answer.status == 200
    assert len(broker.sent) == 3
    gaps = [b - a for a, b in itertools.pairwise(broker.send_times)]
    assert all(gap >= 1.0 for gap in gaps), "each EGW00201 held the key back for its retry_after"
    usage = budget.usage(broker.scope)
    assert usage is not None
    assert usage.slowed


def test_egw00201_is_felt_by_another_runtime_on_the_same_budget() -> None:
    clock = FakeClock()
    budget = InProcessCallBudget(clock, 20.0)
    limited = RateLimitedBroker(clock, limited=1)
    other = RateLimitedBroker(clock, limited=0)
    _runtime(clock, limited, budget).call("GET", PRICE, tr_id="FHKST01010100")
    hit_at = limited.send_times[0]
    _runtime(clock, other, budget).call("GET", PRICE, tr_id="FHKST01010100")
    _runtime(clock, other, budget).call("GET", PRICE, tr_id="FHKST01010100")
    assert other.send_times[0] >= hit_at + 1.0
    assert other.send_times[1] - other.send_times[0] == pytest.approx(BudgetPolicy(20).interval * SLOW_FACTOR)


def test_egw00201_that_persists_surfaces_as_a_typed_error_within_the_deadline() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=100)
    started = clock.monotonic()
    with pytest.raises((CallRateLimitedError, CallBudgetExhaustedError)):
        _runtime(clock, broker).call("GET", PRICE, tr_id="FHKST01010100")
    assert 2 <= len(broker.sent) <= 8
    assert clock.monotonic() - started < 20


def test_egw00201_on_a_post_is_never_retried() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=1)
    with pytest.raises(CallRateLimitedError):
        _runtime(clock, broker).call("POST", "/uapi/hashkey", tr_id="HASHKEY0", body={"a": "b"})
    assert len(broker.sent) == 1


def test_a_call_that_cannot_get_a_slot_in_time_fails_at_once_saying_how_long_the_queue_is() -> None:
    clock = FakeClock()
    broker = RateLimitedBroker(clock, limited=0)
    budget = InProcessCallBudget(clock, 0.1)  # one call per 10.1 s
    runtime = KISRuntime(
        broker, TokenCache(broker, InMemoryTokenStore(), clock), clock, call_deadline_s=5, call_budget=budget
    )
    runtime.call("GET", PRICE, tr_id="FHKST01010100")
    before = clock.monotonic()
    with pytest.raises(CallBudgetExhaustedError) as refused:
        runtime.call("GET", PRICE, tr_id="FHKST01010100")
    assert clock.monotonic() == before
    assert refused.value.queue_s == pytest.approx(BudgetPolicy(0.1).interval, abs=0.01)
    assert "10.10 s ahead" in str(refused.value)
    assert len(broker.send_times) == 1
