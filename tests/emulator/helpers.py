"""A tiny KIS client for the emulator tests: real HTTP over urllib3, no mocks."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3

from kis_emulator import EmulatorAccount

PRICE_PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"
BALANCE_PATH = "/uapi/domestic-stock/v1/trading/inquire-balance"
PRICE_TR = "FHKST01010100"
BALANCE_TR = {"VTS": "VTTC8434R", "REAL": "TTTC8434R"}
PRICE_QUERY = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}


class ManualClock:
    """A clock that moves only when told to (no system time at all)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


class FrozenClock:
    """A clock without ``advance``: the emulator must refuse to move it."""

    def now(self) -> datetime:
        return datetime(2026, 3, 2, tzinfo=UTC)


@dataclass
class Client:
    """Speaks KIS to one emulator as one account."""

    http: urllib3.PoolManager
    base_url: str
    account: EmulatorAccount

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        return self.http.request("POST", self.base_url + path, json=body, headers=headers)

    def token_request(self, **overrides: Any) -> urllib3.BaseHTTPResponse:
        body = {
            "grant_type": "client_credentials",
            "appkey": self.account.app_key,
            "appsecret": self.account.app_secret,
        }
        body.update(overrides)
        return self.post("/oauth2/tokenP", {k: v for k, v in body.items() if v is not None})

    def token(self) -> str:
        response = self.token_request()
        assert response.status == 200, response.data
        token = response.json()["access_token"]
        assert isinstance(token, str)
        return token

    def revoke(self, token: str, **overrides: Any) -> urllib3.BaseHTTPResponse:
        body = {"appkey": self.account.app_key, "appsecret": self.account.app_secret, "token": token}
        body.update(overrides)
        return self.post("/oauth2/revokeP", body)

    def headers(self, token: str | None, tr_id: str, **extra: str) -> dict[str, str]:
        headers = {
            "content-type": "application/json; charset=utf-8",
            "appkey": self.account.app_key,
            "appsecret": self.account.app_secret,
            "tr_id": tr_id,
            "custtype": "P",
        }
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        headers.update(extra)
        return headers

    def call(
        self,
        path: str,
        token: str | None,
        tr_id: str,
        query: dict[str, str] | None = None,
        method: str = "GET",
        **extra_headers: str,
    ) -> urllib3.BaseHTTPResponse:
        return self.http.request(
            method, self.base_url + path, fields=query, headers=self.headers(token, tr_id, **extra_headers)
        )

    def price(self, token: str | None, query: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        return self.call(PRICE_PATH, token, PRICE_TR, PRICE_QUERY if query is None else query)

    def admin(self, method: str, name: str, body: Any = None) -> urllib3.BaseHTTPResponse:
        url = f"{self.base_url}/__emulator__/{name}"
        if body is None:
            return self.http.request(method, url)
        return self.http.request(method, url, json=body)


def kis_error(response: urllib3.BaseHTTPResponse) -> str:
    """The KIS error code of a response in either shape."""
    payload = response.json()
    code = payload.get("msg_cd") or payload.get("error_code")
    assert isinstance(code, str), payload
    return code
