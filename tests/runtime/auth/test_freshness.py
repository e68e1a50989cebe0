"""The pure rules of runtime.auth.freshness: token_state and refresh_at over arbitrary instants, and
decide, the token cache's serve / reuse / issue / wait step, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import assume, given
from hypothesis import strategies as st

from runtime.auth.freshness import Held, Step, TokenState, decide, refresh_at, token_state
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.clock import FakeClock

HOUR = 3600
SCOPE = BrokerScope(Mode.VTS, "0123456789ab")
EPOCH = datetime(2026, 1, 5, tzinfo=UTC)


def _token(expires_at: datetime, tag: str = "t") -> AccessToken:
    issued = min(EPOCH, expires_at)
    return AccessToken(
        value=tag * 32, token_type="Bearer", expires_at=expires_at, issued_at=issued, scope=SCOPE
    )


@given(
    expires_in=st.integers(min_value=-48 * HOUR, max_value=48 * HOUR),
    margin=st.integers(min_value=0, max_value=12 * HOUR),
    offset_us=st.integers(min_value=-1, max_value=1),
)
def test_token_state_classification_matches_its_definition(
    expires_in: int, margin: int, offset_us: int
) -> None:
    now = EPOCH + timedelta(microseconds=offset_us)
    token = _token(EPOCH + timedelta(seconds=expires_in))
    margin_td = timedelta(seconds=margin)

    state = token_state(token, now, margin_td)

    assert (state is TokenState.EXPIRED) == (now >= token.expires_at)
    assert (state is TokenState.FRESH) == (now < token.expires_at - margin_td)
    assert (state is TokenState.STALE) == (token.expires_at - margin_td <= now < token.expires_at)
    assert refresh_at(token, margin_td) == token.expires_at - margin_td


@given(expires_in=st.integers(min_value=1, max_value=48 * HOUR))
def test_zero_margin_makes_every_unexpired_token_fresh(expires_in: int) -> None:
    token = _token(EPOCH + timedelta(seconds=expires_in))

    assert token_state(token, EPOCH, timedelta(0)) is TokenState.FRESH
    assert token_state(token, token.expires_at, timedelta(0)) is TokenState.EXPIRED


# --- decide: the token cache's next step ------------------------------------------------------

MARGIN = st.integers(min_value=0, max_value=12 * HOUR).map(lambda s: timedelta(seconds=s))
OFFSET = st.integers(min_value=-48 * HOUR, max_value=48 * HOUR).map(lambda s: timedelta(seconds=s))
MAYBE_OFFSET = st.none() | OFFSET
WAIT = st.sampled_from([0, 0, 1, 59, 60, 65]).map(lambda s: timedelta(seconds=s))


@st.composite
def situations(draw: st.DrawFn) -> tuple[datetime, timedelta, Held | None, AccessToken | None, timedelta]:
    """A moment on a FakeClock moved by a drawn amount, and what the cache and its store hold."""
    clock = FakeClock(EPOCH)
    clock.advance(draw(st.integers(min_value=0, max_value=24 * HOUR)))
    now = clock.now()
    memory = None
    expires = draw(MAYBE_OFFSET)
    if expires is not None:
        hold = draw(MAYBE_OFFSET)
        memory = Held(_token(now + expires, "m"), None if hold is None else now + hold)
    stored_expires = draw(MAYBE_OFFSET)
    stored = None
    if stored_expires is not None:
        same = memory is not None and draw(st.booleans())
        stored = memory.token if memory is not None and same else _token(now + stored_expires, "s")
    return now, draw(MARGIN), memory, stored, draw(WAIT)


def _fresh(token: AccessToken | None, now: datetime, margin: timedelta) -> bool:
    return token is not None and token_state(token, now, margin) is TokenState.FRESH


def _valid(now: datetime, memory: Held | None, stored: AccessToken | None) -> list[AccessToken]:
    tokens = [memory.token] if memory is not None else []
    tokens += [stored] if stored is not None else []
    return [t for t in tokens if now < t.expires_at]


@given(situations())
def test_decide_never_hands_out_an_expired_token_and_serves_fresh_ones_first(
    situation: tuple[datetime, timedelta, Held | None, AccessToken | None, timedelta],
) -> None:
    now, margin, memory, stored, wait = situation
    decision = decide(now, margin, memory, stored, wait)

    if decision.step in (Step.SERVE, Step.REUSE):
        assert decision.token is not None
        assert now < decision.token.expires_at
    fresh_memory = memory is not None and _fresh(memory.token, now, margin)
    assert (decision.step is Step.SERVE) == (fresh_memory or _fresh(stored, now, margin))
    if fresh_memory:
        assert memory is not None
        assert decision.token == memory.token
        assert not decision.from_store


@given(situations())
def test_decide_issues_only_when_nothing_fresh_nothing_held_and_the_budget_allows(
    situation: tuple[datetime, timedelta, Held | None, AccessToken | None, timedelta],
) -> None:
    now, margin, memory, stored, wait = situation
    decision = decide(now, margin, memory, stored, wait)
    valid = _valid(now, memory, stored)

    if decision.step is Step.ISSUE:
        assert wait == timedelta(0)
        # The token kept if tokenP fails is the valid one that lives longest, and nothing holds it.
        longest = max(valid, key=lambda t: t.expires_at, default=None)
        assert decision.token == longest
        assert decision.hold_until is None or decision.hold_until <= now
    if decision.step is Step.WAIT:
        assert valid == []
        assert decision.wait == wait > timedelta(0)
    if decision.step is Step.REUSE:
        assert decision.token in valid
        assert decision.hold_until is not None
        assert decision.hold_until > now


@given(situations())
def test_decide_without_a_budget_wait_is_decide_with_a_zero_one(
    situation: tuple[datetime, timedelta, Held | None, AccessToken | None, timedelta],
) -> None:
    now, margin, memory, stored, _wait = situation

    assert decide(now, margin, memory, stored) == decide(now, margin, memory, stored, timedelta(0))


@given(situations())
def test_a_budget_wait_turns_an_issue_into_a_reuse_until_the_budget_allows_or_a_wait(
    situation: tuple[datetime, timedelta, Held | None, AccessToken | None, timedelta],
) -> None:
    now, margin, memory, stored, wait = situation
    unbudgeted = decide(now, margin, memory, stored)
    budgeted = decide(now, margin, memory, stored, wait)

    if unbudgeted.step is not Step.ISSUE or wait == timedelta(0):
        assert budgeted == unbudgeted  # the budget only matters where tokenP would go out
    elif unbudgeted.token is None:
        assert (budgeted.step, budgeted.wait) == (Step.WAIT, wait)
    else:
        assert (budgeted.step, budgeted.token) == (Step.REUSE, unbudgeted.token)
        assert budgeted.hold_until == now + wait


@given(situations())
def test_a_hold_belongs_to_its_token_and_survives_a_round_trip_through_the_store(
    situation: tuple[datetime, timedelta, Held | None, AccessToken | None, timedelta],
) -> None:
    now, margin, memory, _stored, wait = situation
    assume(memory is not None)
    assert memory is not None
    from_memory = decide(now, margin, memory, None, wait)
    # The store holding the same token changes nothing: the hold follows the token.
    assert decide(now, margin, memory, memory.token, wait).step is from_memory.step
    assert decide(now, margin, memory, memory.token, wait).token == from_memory.token
