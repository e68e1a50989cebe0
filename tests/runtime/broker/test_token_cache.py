"""TokenCache: memory, then store, then the broker; one issuance at a time; KIS's quirks.

Everything runs on a FakeClock and the FakeBroker (KIS-like numbered tokens), so expiry,
the refresh margin and KIS's 6-hour same-token window are driven without waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache, TokenSource
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    IssuanceRateLimitedError,
    MalformedResponseError,
    QTSError,
    ScopeMismatchError,
    StaleTokenError,
    TokenStoreError,
)
from tests.support.fakes import FakeBroker
from tests.support.kis import within

MARGIN = timedelta(minutes=10)
LIFETIME = timedelta(hours=24)
STALE_AFTER_S = (LIFETIME - MARGIN).total_seconds()


@pytest.fixture
def broker(clock: FakeClock) -> FakeBroker:
    return FakeBroker(clock, lifetime=LIFETIME)


@pytest.fixture
def store() -> InMemoryTokenStore:
    return InMemoryTokenStore()


@pytest.fixture
def cache(broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock) -> TokenCache:
    return TokenCache(broker, store, clock, margin=MARGIN)


class SignallingBroker(FakeBroker):
    """A FakeBroker that tells the test when an issuance has started."""

    def __init__(self, clock: FakeClock, *, issue_delay_s: float) -> None:
        super().__init__(clock, issue_delay_s=issue_delay_s)
        self.issuing = threading.Event()

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        self.issuing.set()
        return super().issue_token(deadline=deadline)


class WrongScopeStore(InMemoryTokenStore):
    """A broken store that answers every load with a token of another scope."""

    def __init__(self, foreign: AccessToken) -> None:
        super().__init__()
        self.foreign = foreign
        self.saved: list[AccessToken] = []

    def load(self, scope: BrokerScope) -> AccessToken | None:
        return self.foreign

    def save(self, scope: BrokerScope, token: AccessToken) -> None:
        self.saved.append(token)


class UnwritableStore(InMemoryTokenStore):
    """A store whose writes fail (disk full, redis down)."""

    def save(self, scope: BrokerScope, token: AccessToken) -> None:
        raise TokenStoreError("store is read-only")


def run_together(count: int, target: Callable[[], AccessToken]) -> list[AccessToken | BaseException | None]:
    """Start ``count`` threads on ``target`` at the same instant; return what each got."""
    barrier = threading.Barrier(count)
    results: list[AccessToken | BaseException | None] = [None] * count

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target()
        except BaseException as exc:  # collected and asserted on by the test
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return results


# --- memory, store, broker -------------------------------------------------------------------


def test_first_get_issues_a_token_and_saves_it_to_the_store(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock
) -> None:
    token = cache.get()

    assert broker.issue_calls == 1
    assert token == broker.issued[0]
    assert cache.last_source == TokenSource.ISSUED
    assert store.load(broker.scope) == token
    assert token.scope == broker.scope
    assert token.expires_at - clock.now() == LIFETIME


def test_second_get_is_a_memory_hit_without_issuing(cache: TokenCache, broker: FakeBroker) -> None:
    first = cache.get()
    second = cache.get()

    assert second == first
    assert broker.issue_calls == 1
    assert cache.last_source == TokenSource.MEMORY


def test_a_new_cache_over_the_same_store_loads_the_token_without_issuing(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock
) -> None:
    token = cache.get()
    restarted = TokenCache(broker, store, clock, margin=MARGIN)

    assert restarted.get() == token
    assert restarted.last_source == TokenSource.STORE
    assert broker.issue_calls == 1
    assert restarted.get() == token
    assert restarted.last_source == TokenSource.MEMORY


def test_a_token_inside_the_margin_triggers_exactly_one_reissue(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock
) -> None:
    first = cache.get()
    clock.advance(STALE_AFTER_S + 1)

    second = cache.get()
    third = cache.get()

    assert second != first
    assert third == second
    assert broker.issue_calls == 2
    assert second.expires_at - clock.now() >= MARGIN


def test_a_token_exactly_at_the_refresh_instant_is_reissued(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock
) -> None:
    first = cache.get()
    clock.advance(STALE_AFTER_S)

    assert cache.get() != first
    assert broker.issue_calls == 2


def test_a_token_just_before_the_margin_is_still_served_from_memory(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock
) -> None:
    first = cache.get()
    clock.advance(STALE_AFTER_S - 1)

    assert cache.get() == first
    assert broker.issue_calls == 1


def test_an_expired_token_triggers_exactly_one_reissue(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock
) -> None:
    first = cache.get()
    clock.advance(LIFETIME.total_seconds() + 3600)

    second = cache.get()
    assert cache.get() == second
    assert second != first
    assert broker.issue_calls == 2
    assert clock.now() < second.expires_at


def test_a_stale_token_in_the_store_is_not_served_but_reissued(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock
) -> None:
    first = cache.get()
    clock.advance(STALE_AFTER_S + 1)
    restarted = TokenCache(broker, store, clock, margin=MARGIN)

    second = restarted.get()
    assert second != first
    assert restarted.last_source == TokenSource.ISSUED
    assert store.load(broker.scope) == second


def test_a_token_stored_for_another_mode_is_never_returned(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    real = FakeBroker(clock, mode=Mode.REAL)
    vts = FakeBroker(clock, mode=Mode.VTS)
    real_token = TokenCache(real, store, clock).get()

    vts_token = TokenCache(vts, store, clock).get()

    assert vts_token != real_token
    assert vts_token.scope == vts.scope != real.scope
    assert vts.issue_calls == 1
    assert store.load(real.scope) == real_token
    assert store.load(vts.scope) == vts_token


def test_a_token_stored_for_another_app_key_is_never_returned(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    one = FakeBroker(clock, app_key="PSkeyone000000000000000000000000001")
    two = FakeBroker(clock, app_key="PSkeytwo000000000000000000000000002")
    TokenCache(one, store, clock).get()

    token = TokenCache(two, store, clock).get()

    assert token.scope == two.scope
    assert two.issue_calls == 1


def test_a_store_that_answers_with_another_scope_is_ignored(clock: FakeClock) -> None:
    foreign = FakeBroker(clock, mode=Mode.REAL).issue_token(deadline=within())
    broker = FakeBroker(clock, mode=Mode.VTS)
    cache = TokenCache(broker, WrongScopeStore(foreign), clock)

    token = cache.get()

    assert token.scope == broker.scope
    assert token != foreign
    assert broker.issue_calls == 1
    assert cache.held() == token


def test_in_memory_store_refuses_a_token_of_another_scope(clock: FakeClock) -> None:
    store = InMemoryTokenStore()
    real_token = FakeBroker(clock, mode=Mode.REAL).issue_token(deadline=within())
    vts_scope = FakeBroker(clock, mode=Mode.VTS).scope

    with pytest.raises(ScopeMismatchError):
        store.save(vts_scope, real_token)

    assert store.load(vts_scope) is None
    assert store.load(real_token.scope) is None


def test_a_store_that_cannot_be_written_costs_nothing_but_persistence(
    broker: FakeBroker, clock: FakeClock
) -> None:
    cache = TokenCache(broker, UnwritableStore(), clock, margin=MARGIN)

    token = cache.get()

    assert cache.get() == token
    assert broker.issue_calls == 1


def test_negative_margin_is_refused(broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="margin"):
        TokenCache(broker, store, clock, margin=timedelta(seconds=-1))


# --- single flight ---------------------------------------------------------------------------


def test_32_threads_on_an_empty_cache_cause_one_issuance_and_share_the_token(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    broker = FakeBroker(clock, issue_delay_s=0.05)
    cache = TokenCache(broker, store, clock, margin=MARGIN)

    results = run_together(32, cache.get)

    assert broker.issue_calls == 1
    assert all(isinstance(result, AccessToken) for result in results), results
    assert set(results) == {broker.issued[0]}


def test_32_threads_on_a_stale_token_cause_one_reissue_and_share_the_new_token(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    broker = FakeBroker(clock, issue_delay_s=0.05)
    cache = TokenCache(broker, store, clock, margin=MARGIN)
    first = cache.get()
    clock.advance(STALE_AFTER_S + 1)

    results = run_together(32, cache.get)

    assert broker.issue_calls == 2
    assert all(isinstance(result, AccessToken) for result in results), results
    assert set(results) == {broker.issued[1]}
    assert broker.issued[1] != first


def test_waiting_for_another_threads_issuance_is_bounded_by_timeout(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    broker = SignallingBroker(clock, issue_delay_s=1.0)
    cache = TokenCache(broker, store, clock, margin=MARGIN)
    slow = threading.Thread(target=cache.get)
    slow.start()
    assert broker.issuing.wait(5)

    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="waiting"):
        cache.get(deadline=Deadline.after(clock, 0.1))
    waited = time.monotonic() - started
    slow.join(timeout=5)

    assert 0.09 <= waited < 0.5
    assert broker.issue_calls == 1


# --- KIS hands back the same token within 6 hours --------------------------------------------


def test_a_reissue_that_returns_the_same_token_is_kept_until_it_expires(
    clock: FakeClock, store: InMemoryTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FakeBroker(clock, lifetime=timedelta(hours=7), reuse_window=timedelta(hours=6))
    cache = TokenCache(broker, store, clock, margin=timedelta(hours=2))
    first = cache.get()

    clock.advance(timedelta(hours=5, minutes=30).total_seconds())  # stale, inside KIS's reuse window
    with caplog.at_level(logging.INFO, logger="runtime.auth.token_cache"):
        again = cache.get()
    assert again == first
    assert broker.issue_calls == 2
    assert "same token" in caplog.text

    for _ in range(5):
        clock.advance(600)  # up to 6 h 20 min: still valid, and past the reuse window too
        assert cache.get() == first
    assert broker.issue_calls == 2

    clock.advance(timedelta(minutes=40).total_seconds())  # 7 h: expired
    fresh = cache.get()
    assert fresh != first
    assert broker.issue_calls == 3
    assert fresh.expires_at - clock.now() == timedelta(hours=7)


# --- proactive refresh failures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "pause_s"),
    [
        (BrokerUnavailableError("KIS is down"), 60),
        (
            IssuanceRateLimitedError("1분당 1회", retry_after=timedelta(seconds=90), code="EGW00133"),
            90,
        ),
    ],
    ids=["unavailable", "rate-limited"],
)
def test_a_failed_proactive_refresh_keeps_the_valid_token_and_pauses_before_retrying(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock, error: QTSError, pause_s: int
) -> None:
    first = cache.get()
    clock.advance(STALE_AFTER_S + 1)
    broker.issue_errors.append(error)

    assert cache.get() == first
    assert broker.issue_calls == 2

    clock.advance(pause_s - 2)
    assert cache.get() == first
    assert broker.issue_calls == 2

    clock.advance(2)
    second = cache.get()
    assert second != first
    assert broker.issue_calls == 3


def test_a_failed_proactive_refresh_stops_serving_the_token_at_expiry(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock
) -> None:
    cache.get()
    clock.advance(LIFETIME.total_seconds() - 30)
    broker.issue_errors.append(BrokerUnavailableError("KIS is down"))
    cache.get()  # kept: 30 s left, next try in 60 s

    clock.advance(30)
    broker.issue_errors.append(BrokerUnavailableError("still down"))
    with pytest.raises(BrokerUnavailableError, match="still down"):
        cache.get()
    assert broker.issue_calls == 3


def test_rejected_credentials_during_a_proactive_refresh_are_raised(
    cache: TokenCache, broker: FakeBroker, clock: FakeClock
) -> None:
    cache.get()
    clock.advance(STALE_AFTER_S + 1)
    broker.issue_errors.append(CredentialsRejectedError("유효하지 않은 AppKey입니다.", code="EGW00103"))

    with pytest.raises(CredentialsRejectedError):
        cache.get()


@pytest.mark.parametrize(
    "error",
    [
        BrokerUnavailableError("KIS is down"),
        IssuanceRateLimitedError("1분당 1회", retry_after=timedelta(seconds=60), code="EGW00133"),
        CredentialsRejectedError("유효하지 않은 AppKey입니다.", code="EGW00103"),
        MalformedResponseError("not JSON"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_any_issuance_error_without_a_valid_token_is_raised_and_nothing_is_kept(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore, error: QTSError
) -> None:
    broker.issue_errors.append(error)

    with pytest.raises(type(error)) as raised:
        cache.get()

    assert raised.value is error
    assert cache.peek() is None
    assert cache.held() is None
    assert store.load(broker.scope) is None
    assert cache.get() == broker.issued[0]  # the next get tries again at once


def test_an_issuance_error_after_expiry_is_raised(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock
) -> None:
    cache.get()
    clock.advance(LIFETIME.total_seconds())
    broker.issue_errors.append(BrokerUnavailableError("KIS is down"))

    with pytest.raises(BrokerUnavailableError):
        cache.get()


# --- invalidate ------------------------------------------------------------------------------


def test_invalidate_clears_memory_and_store(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore
) -> None:
    token = cache.get()

    cache.invalidate(token)

    assert cache.peek() is None
    assert store.load(broker.scope) is None
    replacement = cache.get()
    assert replacement != token
    assert broker.issue_calls == 2


def test_invalidate_leaves_a_different_newer_token_in_the_store_alone(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore
) -> None:
    old = cache.get()
    newer = broker.issue_token(deadline=within())  # another process refreshed and saved its token
    store.save(broker.scope, newer)

    cache.invalidate(old)

    assert store.load(broker.scope) == newer
    assert cache.get() == newer
    assert cache.last_source == TokenSource.STORE


def test_a_reissue_returning_the_invalidated_token_raises_stale_and_caches_nothing(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    broker = FakeBroker(clock, reuse_window=timedelta(hours=6))
    cache = TokenCache(broker, store, clock, margin=MARGIN)
    token = cache.get()

    cache.invalidate(token)
    with pytest.raises(StaleTokenError) as raised:
        cache.get()

    assert raised.value.code == "EGW00121"
    assert cache.peek() is None
    assert store.load(broker.scope) is None
    assert broker.issue_calls == 2


def test_an_invalidated_token_is_not_loaded_back_from_a_store_that_still_has_it(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore
) -> None:
    token = cache.get()
    cache.invalidate(token)
    store.save(broker.scope, token)  # a slower process writes the rejected token back

    assert cache.get() != token
    assert broker.issue_calls == 2


def test_a_token_invalidated_by_one_process_is_not_loaded_by_the_next(
    cache: TokenCache, broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock
) -> None:
    token = cache.get()
    broker.void()
    cache.invalidate(token)

    next_process = TokenCache(broker, store, clock, margin=MARGIN)

    assert next_process.get() != token
    assert next_process.last_source == TokenSource.ISSUED


def test_in_memory_store_lists_the_tokens_of_both_modes(clock: FakeClock) -> None:
    store = InMemoryTokenStore()
    saved = []
    for mode in (Mode.REAL, Mode.VTS):
        broker = FakeBroker(clock, mode=mode)
        saved.append(TokenCache(broker, store, clock).get())

    assert sorted(store.tokens(), key=lambda token: token.scope.mode.value) == saved
