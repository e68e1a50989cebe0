"""Builders for KIS payloads and credentials used across tests (shapes from KIS_API.md)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.broker.base import Mode
from runtime.broker.kis.auth import format_kst
from runtime.settings import AppCredentials, Settings

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
