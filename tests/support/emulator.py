"""The one way tests start a KIS emulator (``running_emulator``, ``Emulators``), hand-driven
clocks for it, and a tiny KIS client for the emulator tests: real HTTP over urllib3, no mocks."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3

from kis_emulator import EmulatorAccount, EmulatorClock, EmulatorConfig, KISEmulator
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID

BALANCE_TR = {"VTS": "VTTC8434R", "REAL": "TTTC8434R"}


def _emulator(
    mode: str,
    accounts: Sequence[EmulatorAccount] | None,
    clock: EmulatorClock | None,
    config: EmulatorConfig | None,
    settings: dict[str, Any],
) -> KISEmulator:
    if config is not None and settings:
        raise TypeError("pass either config or EmulatorConfig fields, not both")
    chosen = config if config is not None else EmulatorConfig(**settings)
    return KISEmulator(
        mode, accounts=list(accounts) if accounts is not None else None, clock=clock, config=chosen
    )


@contextmanager
def running_emulator(
    mode: str = "VTS",
    *,
    accounts: Sequence[EmulatorAccount] | None = None,
    clock: EmulatorClock | None = None,
    config: EmulatorConfig | None = None,
    **settings: Any,
) -> Iterator[KISEmulator]:
    """An emulator of ``mode`` on a free loopback port for the ``with`` block; ``settings`` are
    EmulatorConfig fields (``max_rps=None``, ``token_lifetime=...``) unless ``config`` is given."""
    with _emulator(mode, accounts, clock, config, settings) as emulator:
        yield emulator


class Emulators:
    """Starts emulators for one test (the ``emulators`` fixture) and stops them all at its end;
    ``accounts`` are the ones an emulator knows unless ``start`` names others."""

    def __init__(self, accounts: Sequence[EmulatorAccount] | None = None) -> None:
        self._accounts = list(accounts) if accounts is not None else None
        self._running: list[KISEmulator] = []

    def start(
        self,
        mode: str = "VTS",
        accounts: Sequence[EmulatorAccount] | None = None,
        *,
        clock: EmulatorClock | None = None,
        config: EmulatorConfig | None = None,
        **settings: Any,
    ) -> KISEmulator:
        """A started emulator of ``mode``."""
        known = accounts if accounts is not None else self._accounts
        emulator = _emulator(mode, known, clock, config, settings)
        emulator.start("127.0.0.1", 0)
        self._running.append(emulator)
        return emulator

    def stop_all(self) -> None:
        for emulator in self._running:
            emulator.stop()
        self._running.clear()


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
        return self.call(PRICE_PATH, token, PRICE_TR_ID, PRICE_PARAMS if query is None else query)

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
