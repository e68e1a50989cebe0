"""ApprovalKeyCache: memory, then the store, then Approval; renewal before 24 h; OPSP0011 invalidation."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.auth.approval_cache import (
    APPROVAL_LIFETIME,
    ApprovalKeyCache,
    ApprovalSource,
    ApprovalState,
    approval_state,
)
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.broker.base import ApprovalKey
from runtime.clock import FakeClock
from runtime.errors import BrokerUnavailableError, CredentialsRejectedError
from tests.support.fakes import FakeBroker

MARGIN = timedelta(minutes=10)


def cache_on(broker: FakeBroker, store: object, clock: FakeClock) -> ApprovalKeyCache:
    return ApprovalKeyCache(broker, store, clock, margin=MARGIN)  # type: ignore[arg-type]


def test_memory_then_store_then_issue(clock: FakeClock) -> None:
    broker, store = FakeBroker(clock), InMemoryTokenStore()
    first = cache_on(broker, store, clock)
    key = first.get()
    assert first.last_source == ApprovalSource.ISSUED
    assert first.get() is key
    assert first.last_source == ApprovalSource.MEMORY
    assert store.load_approval(broker.scope) == key
    second = cache_on(broker, store, clock)  # another process on the same store
    assert second.get() == key
    assert second.last_source == ApprovalSource.STORE
    assert len(broker.approvals) == 1


def test_the_key_is_renewed_before_24_hours_less_the_margin(clock: FakeClock) -> None:
    broker = FakeBroker(clock)
    cache = cache_on(broker, InMemoryTokenStore(), clock)
    key = cache.get()
    assert cache.renew_at(key) == key.issued_at + APPROVAL_LIFETIME - MARGIN
    clock.advance((APPROVAL_LIFETIME - MARGIN).total_seconds() - 1)
    assert cache.get() is key
    clock.advance(1)
    renewed = cache.get()
    assert renewed != key
    assert cache.last_source == ApprovalSource.ISSUED


def test_a_rejected_key_is_forgotten_here_and_in_the_store_and_not_reused(clock: FakeClock) -> None:
    broker, store = FakeBroker(clock), InMemoryTokenStore()
    cache = cache_on(broker, store, clock)
    key = cache.get()
    cache.invalidate(key)
    assert store.load_approval(broker.scope) is None
    fresh = cache.get()
    assert fresh != key
    assert len(broker.approvals) == 2


def test_invalidate_leaves_a_newer_key_of_another_process_in_the_store(clock: FakeClock) -> None:
    broker, store = FakeBroker(clock), InMemoryTokenStore()
    mine = cache_on(broker, store, clock).get()
    theirs = ApprovalKey(value="theirs-000000000000000000000000", scope=broker.scope, issued_at=clock.now())
    store.save_approval(broker.scope, theirs)
    cache_on(broker, store, clock).invalidate(mine)
    assert store.load_approval(broker.scope) == theirs


def test_broker_errors_pass_through_typed(clock: FakeClock) -> None:
    broker = FakeBroker(clock)
    broker.approval_errors.append(CredentialsRejectedError("no", code="EGW00105"))
    cache = cache_on(broker, InMemoryTokenStore(), clock)
    with pytest.raises(CredentialsRejectedError):
        cache.get()
    assert cache.peek() is None


def test_threads_arriving_together_cause_one_issuance(clock: FakeClock) -> None:
    broker = FakeBroker(clock)
    cache = cache_on(broker, InMemoryTokenStore(), clock)
    keys: list[ApprovalKey] = []
    threads = [threading.Thread(target=lambda: keys.append(cache.get())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(broker.approvals) == 1
    assert len(set(keys)) == 1


def test_a_timed_out_wait_for_another_issuance_is_retryable(clock: FakeClock) -> None:
    from runtime.deadline import Deadline

    cache = cache_on(FakeBroker(clock), InMemoryTokenStore(), clock)
    cache._lock.acquire()
    try:
        with pytest.raises(BrokerUnavailableError):
            cache.get(deadline=Deadline.after(clock, 0))
    finally:
        cache._lock.release()


@given(st.integers(min_value=-10_000_000, max_value=10_000_000), st.integers(min_value=0, max_value=43_000))
def test_the_freshness_rule(age_s: int, margin_s: int) -> None:
    clock = FakeClock()
    key = ApprovalKey(value="k" * 36, scope=FakeBroker(clock).scope, issued_at=clock.now())
    margin = timedelta(seconds=margin_s)
    state = approval_state(key, key.issued_at + timedelta(seconds=age_s), margin=margin)
    fresh = -300 <= age_s < (APPROVAL_LIFETIME - margin).total_seconds()
    assert (state is ApprovalState.FRESH) is fresh


def test_three_simulated_days_with_restarts_cost_about_one_approval_a_day(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The soak behind the report's "Approval calls per simulated day": a process restarts every
    hour (a new cache on the shared file store) and asks for a key every 5 minutes."""
    broker, store = FakeBroker(clock), FileTokenStore(tmp_path / "qts")
    days = 3
    cache = cache_on(broker, store, clock)
    for minute in range(0, days * 24 * 60, 5):
        if minute % 60 == 0:
            cache = cache_on(broker, store, clock)  # restart
        cache.get()
        clock.advance(300)
    per_day = len(broker.approvals) / days
    assert 1.0 <= per_day <= 1.1 + 1 / days
