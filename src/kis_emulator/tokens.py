"""Access tokens: minting KIS-shaped JWTs and the issuance, reuse, revoke and expiry rules.

Rules (KIS_API.md §2-§3): a token lives 24 h; tokenP within 6 h of the current token's issuance
returns that same token; at most one successful tokenP per minute per app key. Whether a new
token kills older ones is unconfirmed, so it is a config switch.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import EmulatorConfig


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def mint_jwt(app_key: str, issued_at: datetime, lifetime: timedelta) -> str:
    """A JWT-shaped token like the captured KIS one: HS512 header, ``jti`` = app key.

    The signature is 64 random bytes (86 base64url chars); nobody can verify it, and nobody should.
    """
    header = {"typ": "JWT", "alg": "HS512"}
    iat = int(issued_at.timestamp())
    claims = {
        "sub": "token",
        "aud": str(uuid.uuid4()),
        "iss": "unogw",
        "prdt_cd": "",
        "iat": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "jti": app_key,
    }
    parts = (json.dumps(header, separators=(",", ":")), json.dumps(claims, separators=(",", ":")))
    head, body = (_b64url(part.encode("utf-8")) for part in parts)
    return f"{head}.{body}.{_b64url(secrets.token_bytes(64))}"


class TokenStatus(enum.Enum):
    """Verdict on a bearer token presented with a call."""

    VALID = "valid"
    INVALID = "invalid"  # unknown, revoked, voided or issued to another app key -> EGW00121
    EXPIRED = "expired"  # -> EGW00123


@dataclass
class TokenRecord:
    """One minted token and its fate."""

    token: str
    app_key: str
    issued_at: datetime
    expires_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class Issued:
    """Result of a successful tokenP: the token and whether it was newly minted."""

    record: TokenRecord
    minted: bool


class TokenRateLimitedError(Exception):
    """tokenP came again within the request interval (EGW00133)."""


class TokenBook:
    """All tokens of one emulator host. Not thread-safe: the caller holds the state lock."""

    def __init__(self) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        self._current: dict[str, TokenRecord] = {}
        self._last_success: dict[str, datetime] = {}
        self.minted = 0

    def issue(self, app_key: str, now: datetime, config: EmulatorConfig) -> Issued:
        """Answer a tokenP for ``app_key``: reuse the current token or mint a new one.

        Raises:
            TokenRateLimitedError: the previous successful request is younger than the interval.
                A refused request does not restart the window.
        """
        last = self._last_success.get(app_key)
        if last is not None and now - last < config.request_interval():
            raise TokenRateLimitedError(app_key)
        self._last_success[app_key] = now
        current = self._current.get(app_key)
        if (
            current is not None
            and not current.revoked
            and now < current.expires_at
            and now - current.issued_at < config.reuse_window()
        ):
            return Issued(current, minted=False)
        if config.new_token_revokes_previous:
            for record in self._tokens.values():
                if record.app_key == app_key:
                    record.revoked = True
        lifetime = config.lifetime()
        record = TokenRecord(
            token=mint_jwt(app_key, now, lifetime),
            app_key=app_key,
            issued_at=now,
            expires_at=now + lifetime,
        )
        self._tokens[record.token] = record
        self._current[app_key] = record
        self.minted += 1
        return Issued(record, minted=True)

    def check(self, app_key: str, token: str, now: datetime) -> TokenStatus:
        """Judge a bearer token presented by ``app_key``."""
        record = self._tokens.get(token)
        if record is None or record.revoked or record.app_key != app_key:
            return TokenStatus.INVALID
        if now >= record.expires_at:
            return TokenStatus.EXPIRED
        return TokenStatus.VALID

    def revoke(self, app_key: str, token: str) -> bool:
        """Revoke ``token`` if it is a live-or-expired, unrevoked token of ``app_key``."""
        record = self._tokens.get(token)
        if record is None or record.revoked or record.app_key != app_key:
            return False
        record.revoked = True
        if self._current.get(app_key) is record:
            # Never hand a revoked token back from the 6-hour reuse rule.
            del self._current[app_key]
        return True

    def void_all(self, now: datetime) -> int:
        """Invalidate every currently valid token (KIS nightly maintenance); return how many."""
        voided = 0
        for record in self._tokens.values():
            if not record.revoked and now < record.expires_at:
                record.revoked = True
                voided += 1
        self._current.clear()
        return voided

    def clear(self) -> None:
        """Forget every token and every rate window."""
        self._tokens.clear()
        self._current.clear()
        self._last_success.clear()
        self.minted = 0

    def live_count(self, now: datetime) -> int:
        """How many tokens are valid at ``now``."""
        return sum(1 for r in self._tokens.values() if not r.revoked and now < r.expires_at)
