"""Builders for KIS payloads and credentials used across tests (shapes from KIS_API.md)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from runtime.broker.base import AccessToken, AppCredentials, BrokerScope, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.broker.kis.auth import format_kst
from runtime.clock import ClockPort, FakeClock
from runtime.deadline import Deadline
from runtime.masking import fingerprint
from runtime.settings import Settings

#: The one inquire-price call every test makes (KIS_API.md), and KIS's token endpoints.
PRICE_PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"
PRICE_TR_ID = "FHKST01010100"
PRICE_PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
BALANCE_PATH = "/uapi/domestic-stock/v1/trading/inquire-balance"
TOKEN_PATH = "/oauth2/tokenP"
REVOKE_PATH = "/oauth2/revokeP"

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kis"

VTS_KEY = "PSvts0000000000000000000000000000001"
VTS_SECRET = "v" * 180
REAL_KEY = "PSreal000000000000000000000000000001"
REAL_SECRET = "r" * 180
assert len(VTS_KEY) == len(REAL_KEY) == 36


def credentials(mode: Mode) -> AppCredentials:
    return AppCredentials(VTS_KEY, VTS_SECRET) if mode is Mode.VTS else AppCredentials(REAL_KEY, REAL_SECRET)


def settings_for(base_url: str, mode: Mode = Mode.VTS, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": mode,
        "credentials": credentials(mode),
        "base_url": base_url.rstrip("/"),
    }
    values.update(changes)
    return Settings(**values)


def recorded(name: str) -> dict[str, Any]:
    """A recorded payload from tests/fixtures/kis (see SOURCES.md there)."""
    data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(app_key: str, issued: datetime, lifetime: timedelta = timedelta(hours=24)) -> str:
    """A JWT shaped like KIS's (HS512, jti = app key), with a random signature."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "HS512"}).encode())
    claims = {
        "sub": "token",
        "aud": secrets.token_hex(16),
        "iss": "unogw",
        "iat": int(issued.timestamp()),
        "exp": int((issued + lifetime).timestamp()),
        "jti": app_key,
    }
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(64))}"


def token_reply(
    app_key: str, issued: datetime, lifetime: timedelta = timedelta(hours=24), *, value: str | None = None
) -> dict[str, Any]:
    """A tokenP success body for a token issued at ``issued``."""
    return {
        "access_token": value or jwt(app_key, issued, lifetime),
        "access_token_token_expired": format_kst(issued + lifetime),
        "token_type": "Bearer",
        "expires_in": int(lifetime.total_seconds()),
    }


#: FakeClock's default start (09:00 KST): when the tokens from ``own_token`` were issued.
NOW = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


def own_token(mode: Mode = Mode.VTS, value: str | None = None) -> AccessToken:
    """A 24-hour Bearer token issued at NOW in the scope of ``mode``'s test app key.

    Its value is a KIS-shaped JWT naming that key, unless ``value`` says otherwise.
    """
    key = VTS_KEY if mode is Mode.VTS else REAL_KEY
    return AccessToken(
        value=value or jwt(key, NOW),
        token_type="Bearer",
        expires_at=NOW + timedelta(hours=24),
        issued_at=NOW,
        scope=BrokerScope(mode, fingerprint(key)),
    )


class MakeAdapter(Protocol):
    def __call__(
        self,
        base_url: str | None,
        mode: Mode = ...,
        *,
        creds: AppCredentials | None = ...,
        clock: ClockPort | None = ...,
    ) -> KISBrokerAdapter: ...


def within(seconds: float = 3.0, clock: ClockPort | None = None) -> Deadline:
    """A call deadline ``seconds`` long, as KISRuntime makes one per call. On a FakeClock (the
    default) it runs out only when the test moves that clock; pass SystemClock() for real time."""
    return Deadline.after(clock or FakeClock(), seconds)
