"""The pure refresh rule (runtime.auth.freshness): token_state and refresh_at over arbitrary instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from runtime.auth.freshness import TokenState, refresh_at, token_state
from runtime.broker.base import AccessToken, BrokerScope, Mode

HOUR = 3600
SCOPE = BrokerScope(Mode.VTS, "0123456789ab")
EPOCH = datetime(2026, 1, 5, tzinfo=UTC)


def _token(expires_at: datetime) -> AccessToken:
    return AccessToken(
        value="t" * 32, token_type="Bearer", expires_at=expires_at, issued_at=EPOCH, scope=SCOPE
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
