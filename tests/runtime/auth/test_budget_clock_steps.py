"""The issuance budget under wall-clock steps (NTP corrections), measured on monotonic time.

KIS counts its one-tokenP-a-minute rule on its own clock, which for us is real elapsed time:
the monotonic clock. FakeClock.set_wall steps the wall clock without moving monotonic time, so
these tests ask whether the spacing of tokenP as KIS sees it survives such a step. The cache
is wired as bootstrap.build_runtime wires it over a shared store: a FileTokenStore (it has an
issuance lock) and an IssuanceBudget with the one-minute interval.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from runtime.auth.budget import ISSUE_INTERVAL, MAX_WAIT, IssuanceBudget
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.errors import IssuanceRateLimitedError, QTSError
from tests.support.fakes import FakeBroker

MARGIN = timedelta(minutes=10)
#: The call deadline of ``qts token`` (Settings.call_deadline_s) and the budget wait it grants.
DEADLINE_S = 20.0
BUDGET_WAIT_S = MAX_WAIT.total_seconds()
#: What KIS asks with EGW00133 (runtime.broker.kis.auth.ISSUANCE_RETRY_AFTER).
KIS_RETRY_AFTER = timedelta(seconds=60)


class KISTimedBroker(FakeBroker):
    """FakeBroker that notes the monotonic instant of every tokenP sent (KIS's view of time),
    and can step the wall clock by ``step_on_error_s`` at the moment KIS answers with an error."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.kis_clock = clock
        self.sent_at: list[float] = []
        self.step_on_error_s: float | None = None

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        self.sent_at.append(self.kis_clock.monotonic())
        try:
            return super().issue_token(deadline=deadline)
        except QTSError:
            if self.step_on_error_s is not None:
                step_wall(self.kis_clock, self.step_on_error_s)
            raise


def step_wall(clock: FakeClock, seconds: float) -> None:
    clock.set_wall(clock.now() + timedelta(seconds=seconds))


def egw00133() -> IssuanceRateLimitedError:
    return IssuanceRateLimitedError(
        "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)", retry_after=KIS_RETRY_AFTER, code="EGW00133"
    )


def build_cache(broker: FakeBroker, store: FileTokenStore, clock: FakeClock) -> TokenCache:
    """As bootstrap.build_runtime: the interval applies because the store is shared."""
    assert store.shared
    budget = IssuanceBudget(clock, wait=True, min_interval=ISSUE_INTERVAL)
    return TokenCache(broker, store, clock, margin=MARGIN, budget=budget)


def qts_token(cache: TokenCache, clock: FakeClock) -> AccessToken:
    """What ``qts token`` asks: the call deadline plus up to MAX_WAIT for the budget."""
    return cache.get(deadline=Deadline.after(clock, DEADLINE_S), budget_wait_s=BUDGET_WAIT_S)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> KISTimedBroker:
    return KISTimedBroker(clock)


@pytest.fixture
def cache(broker: KISTimedBroker, tmp_path: Path, clock: FakeClock) -> TokenCache:
    return build_cache(broker, FileTokenStore(tmp_path / "qts"), clock)


def ask_again_until_sent(
    cache: TokenCache, broker: KISTimedBroker, *, tokenp: int = 2, attempts: int = 3
) -> float:
    """Run ``qts token`` until ``tokenp`` tokenP have been sent, asking again at once after each
    refusal (IssuanceRateLimitedError), at most ``attempts`` times; so every second the tokenP
    is held back is the runtime's own doing. Returns the monotonic seconds between the last two."""
    for _attempt in range(attempts):
        if len(broker.sent_at) >= tokenp:
            break
        try:
            qts_token(cache, broker.kis_clock)
        except IssuanceRateLimitedError:
            continue
    started = broker.sent_at[0]
    refused_for = broker.kis_clock.monotonic() - started
    assert len(broker.sent_at) == tokenp, (
        f"{len(broker.sent_at)} tokenP sent; still refused {refused_for:g} s (monotonic) "
        f"after the tokenP at {started:g}, having asked {attempts} times"
    )
    return broker.sent_at[-1] - broker.sent_at[-2]


# --- (a) a backward step right after an issuance ------------------------------------------------


@pytest.mark.parametrize("step_s", [-1, -55, -3600])
def test_a_backward_wall_step_after_an_issuance_blocks_the_next_needed_tokenp_for_one_interval_at_most(
    cache: TokenCache, broker: KISTimedBroker, clock: FakeClock, step_s: float
) -> None:
    first = qts_token(cache, broker.kis_clock)
    step_wall(clock, step_s)
    cache.invalidate(first)  # KIS rejected it: a new token is needed now

    gap = ask_again_until_sent(cache, broker)

    assert cache.peek() != first
    assert gap <= ISSUE_INTERVAL.total_seconds(), f"the needed tokenP was held back {gap:g} s"
    assert gap >= ISSUE_INTERVAL.total_seconds()  # and KIS's minute still passed


# --- (b) a forward step right after an issuance ----------------------------------------------


@pytest.mark.parametrize("step_s", [1, 55, 120])
def test_a_forward_wall_step_after_an_issuance_does_not_let_a_second_tokenp_out_within_a_minute(
    cache: TokenCache, broker: KISTimedBroker, clock: FakeClock, step_s: float
) -> None:
    first = qts_token(cache, broker.kis_clock)
    step_wall(clock, step_s)
    cache.invalidate(first)

    gap = ask_again_until_sent(cache, broker)

    assert gap >= ISSUE_INTERVAL.total_seconds(), (
        f"the second tokenP went out {gap:g} s (monotonic) after the first; KIS answers EGW00133 "
        f"to any tokenP within {ISSUE_INTERVAL.total_seconds():g} s"
    )


# --- (c) after EGW00133, whatever the wall step ------------------------------------------------

STEPS_S = [-120, -61, -30, -6, -5, 0, 5, 30, 61, 120]


@pytest.mark.parametrize("step_s", STEPS_S)
def test_after_egw00133_and_a_wall_step_qts_token_sends_the_next_tokenp_after_kis_retry_time_within_max_wait(
    cache: TokenCache, broker: KISTimedBroker, step_s: float
) -> None:
    """``qts token`` meets EGW00133 and waits it out; the wall clock steps as KIS answers."""
    broker.issue_errors.append(egw00133())
    broker.step_on_error_s = step_s

    gap = ask_again_until_sent(cache, broker)

    assert gap >= KIS_RETRY_AFTER.total_seconds(), f"tokenP resent {gap:g} s after EGW00133"
    assert gap <= MAX_WAIT.total_seconds(), f"tokenP held back {gap:g} s after EGW00133"


@pytest.mark.parametrize("step_s", STEPS_S)
def test_after_egw00133_met_by_a_call_and_a_wall_step_the_next_tokenp_waits_kis_retry_time_within_max_wait(
    cache: TokenCache, broker: KISTimedBroker, step_s: float
) -> None:
    """A quote meets EGW00133 and raises at once (the minute does not fit its deadline); the
    wall clock steps as KIS answers; then ``qts token`` asks."""
    broker.issue_errors.append(egw00133())
    broker.step_on_error_s = step_s
    with pytest.raises(IssuanceRateLimitedError):
        cache.get(deadline=Deadline.after(broker.kis_clock, DEADLINE_S))

    gap = ask_again_until_sent(cache, broker)

    assert gap >= KIS_RETRY_AFTER.total_seconds(), f"tokenP resent {gap:g} s after EGW00133"
    assert gap <= MAX_WAIT.total_seconds(), f"tokenP held back {gap:g} s after EGW00133"
