"""The refresh rule as pure logic over (now, expires_at, margin): no I/O, no clock reads."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from runtime.broker.base import AccessToken

__all__ = ["TokenState", "refresh_at", "token_state"]


class TokenState(enum.Enum):
    """FRESH: use it. STALE: still valid but inside the margin, so reissue now. EXPIRED: unusable."""

    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"


def refresh_at(token: AccessToken, margin: timedelta) -> datetime:
    """The instant from which ``token`` counts as stale."""
    return token.expires_at - margin


def token_state(token: AccessToken, now: datetime, margin: timedelta) -> TokenState:
    """Classify ``token`` at ``now`` with the proactive refresh ``margin``."""
    if now >= token.expires_at:
        return TokenState.EXPIRED
    if now >= refresh_at(token, margin):
        return TokenState.STALE
    return TokenState.FRESH
