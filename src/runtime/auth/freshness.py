"""The refresh rule and the token cache's next step, as pure logic: no I/O, no clock reads."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

import attrs

from runtime.broker.base import AccessToken

__all__ = ["Decision", "Held", "Step", "TokenState", "decide", "refresh_at", "token_state"]


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


class Step(enum.Enum):
    """What the token cache does next (see :func:`decide`)."""

    SERVE = "serve"  # a fresh token: hand it out
    REUSE = "reuse"  # a valid token that may not be refreshed yet: keep handing it out
    ISSUE = "issue"  # nothing fresh and nothing holds tokenP off: ask for a token now
    WAIT = "wait"  # nothing valid, and the issuance budget holds tokenP off for ``wait``


@attrs.frozen
class Held:
    """A token the cache holds, and the instant before which it must not be refreshed (if any).

    The hold is set when KIS handed the same token back (it renews none within 6 h), when a
    refresh failed for a retryable reason, or when the issuance budget keeps tokenP off.
    """

    token: AccessToken
    hold_until: datetime | None = None


@attrs.frozen
class Decision:
    """``step``, with the token it serves or reuses (for ISSUE: the valid token to keep if
    tokenP fails), that token's hold, whether it came from the store, and the budget's wait."""

    step: Step
    token: AccessToken | None = None
    hold_until: datetime | None = None
    from_store: bool = False
    wait: timedelta = timedelta(0)


def decide(
    now: datetime,
    margin: timedelta,
    memory: Held | None,
    stored: AccessToken | None,
    tokenp_wait: timedelta = timedelta(0),
) -> Decision:
    """The serve / reuse / issue / wait decision for a cache holding ``memory``, with ``stored``
    in its store and tokenP held off by the issuance budget for ``tokenp_wait``.

    Fresh beats everything (memory before store). Otherwise the valid token that lives longest
    is reused while its hold lasts; without a hold, tokenP goes out unless the budget holds it
    off, in which case a valid token is reused until the budget allows and without one the
    cache waits. The cache asks the budget (a store read) only when the answer without it is
    ISSUE, then decides again with its wait.
    """
    if memory is not None and token_state(memory.token, now, margin) is TokenState.FRESH:
        return Decision(Step.SERVE, memory.token, memory.hold_until)
    if stored is not None and token_state(stored, now, margin) is TokenState.FRESH:
        return Decision(Step.SERVE, stored, from_store=True)
    current = _longest_valid(now, memory, stored)
    if current is not None and current.hold_until is not None and now < current.hold_until:
        return Decision(Step.REUSE, current.token, current.hold_until)
    if tokenp_wait > timedelta(0):
        if current is None:
            return Decision(Step.WAIT, wait=tokenp_wait)
        return Decision(Step.REUSE, current.token, now + tokenp_wait, wait=tokenp_wait)
    if current is None:
        return Decision(Step.ISSUE)
    return Decision(Step.ISSUE, current.token, current.hold_until)


def _longest_valid(now: datetime, memory: Held | None, stored: AccessToken | None) -> Held | None:
    # A hold belongs to a token, so the stored copy of the held token keeps it.
    candidates = [] if memory is None else [memory]
    if stored is not None and (memory is None or stored.value != memory.token.value):
        candidates.append(Held(stored))
    valid = [held for held in candidates if now < held.token.expires_at]
    return max(valid, key=lambda held: held.token.expires_at, default=None)
