"""The issuance budget: one tokenP per scope per minute, EGW00133 remembered, waits on the fake clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from runtime.auth.budget import ISSUE_INTERVAL, MAX_WAIT, IssuanceBudget
from runtime.auth.ports import IssuanceLedger
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache, TokenSource
from runtime.broker.base import AccessToken
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    IssuanceRateLimitedError,
)
from tests.support.fakes import FakeBroker

MARGIN = timedelta(minutes=10)


def egw00133(retry_after_s: float = 60) -> IssuanceRateLimitedError:
    return IssuanceRateLimitedError(
        "1분당 1회", retry_after=timedelta(seconds=retry_after_s), code="EGW00133"
    )


@pytest.fixture
def broker(clock: FakeClock) -> FakeBroker:
    return FakeBroker(clock)


@pytest.fixture
def store(tmp_path: Path) -> FileTokenStore:
    return FileTokenStore(tmp_path / "qts")


def make_cache(
    broker: FakeBroker, store: object, clock: FakeClock, *, wait: bool = True, waits: list[int] | None = None
) -> TokenCache:
    budget = IssuanceBudget(clock, wait=wait, on_wait=waits.append if waits is not None else None)
    return TokenCache(broker, store, clock, margin=MARGIN, budget=budget)  # type: ignore[arg-type]


# --- the pure rule ---------------------------------------------------------------------------


def test_an_empty_ledger_allows_issuing_at_once(clock: FakeClock) -> None:
    assert IssuanceBudget(clock).wait_needed(IssuanceLedger(), clock.now()) == timedelta(0)


def test_a_recent_issuance_blocks_for_the_rest_of_the_minute(clock: FakeClock) -> None:
    budget = IssuanceBudget(clock)
    ledger = budget.issuing(IssuanceLedger(), clock.now())
    clock.advance(25)
    assert budget.wait_needed(ledger, clock.now()) == timedelta(seconds=35)
    clock.advance(35)
    assert budget.wait_needed(ledger, clock.now()) == timedelta(0)


def test_egw00133_blocks_until_its_retry_time_but_never_more_than_max_wait(clock: FakeClock) -> None:
    budget = IssuanceBudget(clock, min_interval=timedelta(0))
    ledger = budget.rate_limited(IssuanceLedger(), clock.now(), timedelta(seconds=600))
    assert budget.wait_needed(ledger, clock.now()) == MAX_WAIT


def test_a_wall_clock_stepped_back_never_blocks_longer_than_one_interval(clock: FakeClock) -> None:
    budget = IssuanceBudget(clock)
    ledger = budget.issuing(IssuanceLedger(), clock.now() + timedelta(hours=5))  # issued "in the future"
    assert budget.wait_needed(ledger, clock.now()) == ISSUE_INTERVAL


def test_waiting_uses_the_clock_and_counts_down(clock: FakeClock) -> None:
    seen: list[int] = []
    budget = IssuanceBudget(clock, on_wait=seen.append)
    before = clock.monotonic()
    budget.wait(timedelta(seconds=3.5), time_left_s=None)
    assert clock.monotonic() - before == pytest.approx(3.5)
    assert seen == [4, 3, 2, 1, 0]


@pytest.mark.parametrize(
    ("wait", "time_left_s", "already_s"),
    [(False, None, 0), (True, 10.0, 0), (True, None, 30)],
    ids=["waiting off", "past the deadline", "over 65 s in all"],
)
def test_a_wait_that_is_not_allowed_raises_at_once_with_retry_after(
    clock: FakeClock, wait: bool, time_left_s: float | None, already_s: float
) -> None:
    budget = IssuanceBudget(clock, wait=wait)
    before = clock.monotonic()
    with pytest.raises(IssuanceRateLimitedError) as raised:
        budget.wait(
            timedelta(seconds=40), time_left_s=time_left_s, already_waited=timedelta(seconds=already_s)
        )
    assert raised.value.retry_after == timedelta(seconds=40)
    assert raised.value.exit_code == 5
    assert clock.monotonic() == before


# --- inside the token cache ------------------------------------------------------------------


def test_a_second_tokenp_within_a_minute_waits_out_the_budget_on_the_clock(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    waits: list[int] = []
    cache = make_cache(broker, store, clock, waits=waits)
    first = cache.get()
    clock.advance(10)
    cache.invalidate(first)

    second = cache.get()

    assert second != first
    assert broker.issue_calls == 2
    assert broker.issued[1].issued_at - broker.issued[0].issued_at == ISSUE_INTERVAL
    assert waits[0] == 50
    assert waits[-1] == 0


def test_the_budget_is_shared_through_the_store_by_the_next_process(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    first = make_cache(broker, store, clock).get()
    store.delete(broker.scope)  # lost (or revoked) by someone; the ledger stays
    clock.advance(5)

    next_process = make_cache(broker, FileTokenStore(store.folder), clock, wait=False)
    with pytest.raises(IssuanceRateLimitedError) as raised:
        next_process.get()

    assert raised.value.retry_after == timedelta(seconds=55)
    assert broker.issue_calls == 1
    assert first == broker.issued[0]


def test_a_wait_that_does_not_fit_the_deadline_raises_without_waiting(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    cache = make_cache(broker, store, clock)
    cache.get()
    cache.forget()  # no token left at all (a rejected one would be served again: round 2, class 7)
    before = clock.monotonic()

    with pytest.raises(IssuanceRateLimitedError):
        cache.get(deadline=Deadline.after(clock, 20))

    assert clock.monotonic() == before
    assert broker.issue_calls == 1


def test_egw00133_is_remembered_and_waited_out_then_issued(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    broker.issue_errors.append(egw00133(61))
    cache = make_cache(broker, store, clock)

    token = cache.get()

    assert broker.issue_calls == 2
    assert token.issued_at - clock.now() == timedelta(0)
    assert broker.issued[0].issued_at >= token.issued_at - timedelta(seconds=61)
    assert store.load_ledger(broker.scope).blocked_until is None  # cleared by the issuance


def test_egw00133_without_waiting_is_raised_and_remembered_for_the_next_process(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    broker.issue_errors.append(egw00133(60))
    with pytest.raises(IssuanceRateLimitedError) as raised:
        make_cache(broker, store, clock, wait=False).get()
    assert raised.value.code == "EGW00133"
    assert store.load_ledger(broker.scope).blocked_until == clock.now() + timedelta(seconds=60)

    clock.advance(30)
    with pytest.raises(IssuanceRateLimitedError) as again:
        make_cache(broker, FileTokenStore(store.folder), clock, wait=False).get()
    assert again.value.retry_after == timedelta(seconds=30)
    assert broker.issue_calls == 1  # the second process did not ask KIS


def test_a_blocked_refresh_keeps_the_still_valid_token(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    cache = make_cache(broker, store, clock, wait=False)
    first = cache.get()
    clock.advance(timedelta(hours=23, minutes=55).total_seconds())  # stale, still valid
    store.save_ledger(broker.scope, IssuanceLedger(blocked_until=clock.now() + timedelta(seconds=30)))

    assert cache.get() == first
    assert cache.last_source == TokenSource.MEMORY
    assert broker.issue_calls == 1
    clock.advance(31)
    assert cache.get() != first
    assert broker.issue_calls == 2


@pytest.mark.parametrize(
    "error",
    [
        CredentialsRejectedError("유효하지 않은 AppSecret", code="EGW00105"),
        BrokerUnavailableError("refused", request_sent=False),
    ],
    ids=["rejected", "never sent"],
)
def test_a_tokenp_that_could_not_issue_does_not_count(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock, error: Exception
) -> None:
    broker.issue_errors.append(error)  # type: ignore[arg-type]
    cache = make_cache(broker, store, clock, wait=False)
    with pytest.raises(type(error)):
        cache.get()
    assert cache.get() == broker.issued[0]  # at once: no budget spent


def test_a_tokenp_with_an_unknown_outcome_counts(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    broker.issue_errors.append(BrokerUnavailableError("read timeout", request_sent=True))
    cache = make_cache(broker, store, clock, wait=False)
    with pytest.raises(BrokerUnavailableError):
        cache.get()
    with pytest.raises(IssuanceRateLimitedError):
        cache.get()


def test_a_process_local_store_keeps_the_ledger_in_memory(broker: FakeBroker, clock: FakeClock) -> None:
    store = InMemoryTokenStore()
    cache = make_cache(broker, store, clock, wait=False)
    cache.get()
    cache.forget()
    with pytest.raises(IssuanceRateLimitedError):
        cache.get()
    assert store.load_ledger(broker.scope).last_issued_at == clock.now()


def test_a_wait_allowance_extends_the_deadline_for_the_wait_only(
    broker: FakeBroker, store: FileTokenStore, clock: FakeClock
) -> None:
    cache = make_cache(broker, store, clock)
    cache.invalidate(cache.get())
    seen: list[float | None] = []
    original = broker.issue_token

    def issue(*, deadline: Deadline) -> AccessToken:
        seen.append(deadline.remaining())
        return original(deadline=deadline)

    broker.issue_token = issue  # type: ignore[method-assign]

    cache.get(deadline=Deadline.after(clock, 20), budget_wait_s=65)

    assert broker.issue_calls == 2
    assert seen == [pytest.approx(20)]  # tokenP itself still gets the call deadline, not 20 + 65
