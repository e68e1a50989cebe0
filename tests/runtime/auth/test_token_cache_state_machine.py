"""TokenCache's state machine: properties of the cache over arbitrary lifetimes, margins and time.

The cache is driven by a hypothesis state machine on a FakeClock: advance time, get, call,
invalidate, void on the broker. The pure rule (``token_state``) has its own properties in
tests/runtime/auth/test_freshness.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from runtime.auth.freshness import TokenState, refresh_at, token_state
from runtime.auth.session import KISRuntime
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from tests.support.fakes import FakeBroker
from tests.support.kis import PRICE_PATH

HOUR = 3600


# (lifetime s, margin s, reuse window in permille of the lifetime or None). KIS's own figures
# (24 h life, 6 h reuse, 10 min margin) never reach the reuse window; a 7 h life with a 2 h
# margin and a 6 h window (857 permille) does, so both are drawn often on purpose.
KIS_SHAPES = st.sampled_from([(24 * HOUR, 600, 250), (7 * HOUR, 2 * HOUR, 857), (7 * HOUR, 2 * HOUR, None)])
ANY_SHAPE = st.tuples(
    st.integers(min_value=60, max_value=48 * HOUR),
    st.integers(min_value=0, max_value=12 * HOUR),
    st.none() | st.integers(min_value=0, max_value=999),
)


class ReuseRecordingBroker(FakeBroker):
    """A FakeBroker that records every token a reissue handed back unchanged (KIS's 6 h reuse)."""

    def __init__(self, clock: FakeClock, *, lifetime: timedelta, reuse_window: timedelta | None) -> None:
        super().__init__(clock, lifetime=lifetime, reuse_window=reuse_window)
        self.handed_back: list[str] = []

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        known = {token.value for token in self.issued}
        token = super().issue_token(deadline=deadline)
        if token.value in known:
            self.handed_back.append(token.value)
        return token


class TokenCacheMachine(RuleBasedStateMachine):
    """TokenCache + KISRuntime over a FakeBroker while time moves arbitrarily."""

    clock: FakeClock
    broker: ReuseRecordingBroker
    cache: TokenCache
    runtime: KISRuntime
    lifetime: timedelta
    margin: timedelta
    window: timedelta
    started: datetime
    disruptions: int
    total_disruptions: int
    checked_issued: int
    last_issue_at: datetime | None

    @initialize(shape=KIS_SHAPES | ANY_SHAPE)
    def build(self, shape: tuple[int, int, int | None]) -> None:
        lifetime_s, margin_s, reuse_permille = shape
        self.clock = FakeClock()
        self.lifetime = timedelta(seconds=lifetime_s)
        self.margin = timedelta(seconds=margin_s)
        # KIS reuses a token for 6 h of its 24 h: the reuse window is always shorter than the lifetime.
        reuse = None if reuse_permille is None else timedelta(seconds=lifetime_s * reuse_permille // 1000)
        self.broker = ReuseRecordingBroker(self.clock, lifetime=self.lifetime, reuse_window=reuse)
        self.cache = TokenCache(self.broker, InMemoryTokenStore(), self.clock, margin=self.margin)
        self.runtime = KISRuntime(self.broker, self.cache, self.clock)
        # A token is replaced once per window: lifetime - margin, or its whole life when shorter.
        self.window = self.lifetime - self.margin if self.lifetime > self.margin else self.lifetime
        self.started = self.clock.now()
        self.disruptions = 0
        self.total_disruptions = 0
        self.checked_issued = 0
        self.last_issue_at = None

    @rule(
        seconds=st.integers(min_value=0, max_value=120)
        | st.integers(min_value=0, max_value=3 * HOUR)
        | st.integers(min_value=0, max_value=30 * HOUR)
    )
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.cache.peek() is not None)
    @rule(permille=st.integers(min_value=0, max_value=1000))
    def advance_into_the_margin(self, permille: int) -> None:
        """Jump to a point between the held token's refresh instant (0) and its expiry (1000)."""
        held = self.cache.peek()
        assert held is not None
        target = refresh_at(held, self.margin) + self.margin * permille / 1000
        if target > self.clock.now():
            self.clock.advance((target - self.clock.now()).total_seconds())

    @rule()
    def get(self) -> None:
        self.check_handed_out(self.cache.get())

    @rule()
    def call(self) -> None:
        sent_before = len(self.broker.sent)
        answer = self.runtime.call("GET", PRICE_PATH, tr_id="FHKST01010100")
        assert answer.status == 200
        _, token = self.broker.sent[-1]
        assert len(self.broker.sent) - sent_before in (1, 2)
        assert self.clock.now() < token.expires_at

    @precondition(lambda self: self.cache.peek() is not None)
    @rule()
    def invalidate(self) -> None:
        """KIS voided the token and a call reported it: the cache is told."""
        held = self.cache.peek()
        assert held is not None
        self.broker.void()
        self.cache.invalidate(held)
        self.disruptions += 1
        self.total_disruptions += 1

    @rule()
    def void(self) -> None:
        """KIS voids every token (maintenance) without the cache knowing yet."""
        self.broker.void()
        self.disruptions += 1
        self.total_disruptions += 1

    def check_handed_out(self, token: AccessToken) -> None:
        now = self.clock.now()
        assert token.scope == self.broker.scope
        assert now < token.expires_at, "get() returned an expired token"
        if self.lifetime > self.margin and token.value not in self.broker.handed_back:
            assert token.expires_at - now >= self.margin, "get() returned a token inside the margin"
        assert token_state(token, now, self.margin) is not TokenState.EXPIRED

    @invariant()
    def at_most_one_issuance_per_validity_window(self) -> None:
        if not hasattr(self, "broker"):
            return
        issued = self.broker.issued
        for token in issued[self.checked_issued :]:
            if self.last_issue_at is not None and self.disruptions == 0:
                assert token.issued_at - self.last_issue_at >= self.window, "reissued too early"
            self.last_issue_at = token.issued_at
            self.disruptions = 0
        self.checked_issued = len(issued)

    @invariant()
    def issuance_count_is_bounded_by_windows_crossed(self) -> None:
        if not hasattr(self, "broker"):
            return
        elapsed = self.clock.now() - self.started
        windows = elapsed // self.window
        assert len(self.broker.issued) <= windows + 1 + self.total_disruptions

    @invariant()
    def a_token_is_handed_back_at_most_once(self) -> None:
        """The cache never asks again for a token KIS will only hand back again: no loop."""
        if not hasattr(self, "broker"):
            return
        assert len(self.broker.handed_back) == len(set(self.broker.handed_back))
        assert self.broker.issue_calls == len(self.broker.issued) + len(self.broker.handed_back)

    @invariant()
    def held_token_state_is_consistent(self) -> None:
        if not hasattr(self, "cache"):
            return
        held = self.cache.peek()
        if held is None:
            return
        now = self.clock.now()
        state = token_state(held, now, self.margin)
        if state is TokenState.FRESH:
            assert now < held.expires_at - self.margin
        assert (state is TokenState.EXPIRED) == (now >= held.expires_at)


TokenCacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestTokenCacheFreshnessPropertiesHoldUnderAnyClockSequence = TokenCacheMachine.TestCase
