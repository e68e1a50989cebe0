"""Round 2, class 7: rejections handled no more eagerly than they must be.

- A one-off EGW00123 seconds after issuance does not drop a valid token when its reissue is
  blocked (the one-tokenP-a-minute budget, or EGW00133): the previous token keeps being served.
- A key KIS rejected (EGW00103/105, EGW02004) is remembered: a loop of calls sends one tokenP.
- A tokenP that never left this host (connection refused, TLS handshake failed) does not count
  against the budget: fixing KIS_CA_BUNDLE or starting the server costs no 60 s wait.

All over real sockets: the offline KIS emulator, a port nobody listens on, and an HTTPS server
whose certificate comes from a throwaway CA.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import trustme

from kis_emulator import EmulatorConfig, KISEmulator
from runtime.auth.session import KISRuntime
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    TLSVerificationError,
    WrongModeError,
)
from runtime.settings import Settings
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, TOKEN_PATH, token_reply
from tests.support.scripted_kis import APP_KEY, APP_SECRET
from tests.support.servers import LOOPBACK, LoopbackHTTPServer, Reply, closed_url

DEADLINE_S = 3.0


@pytest.fixture
def emulator() -> Iterator[KISEmulator]:
    # KIS's one-tokenP-a-minute rule is on: a reissue seconds after issuance meets EGW00133.
    with KISEmulator("VTS", config=EmulatorConfig(max_rps=None)) as emu:
        yield emu


def _settings(base_url: str, *, secret: str = APP_SECRET, ca: Path | None = None) -> Settings:
    return Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, secret),
        base_url=base_url,
        call_deadline_s=DEADLINE_S,
        wait_on_rate_limit=False,
        ca_bundle=ca,
    )


def _quote(runtime: KISRuntime) -> object:
    return runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)


def _token_requests(emulator: KISEmulator) -> int:
    return int(emulator.counters()["requests_by_endpoint"].get(TOKEN_PATH, 0))


@pytest.mark.parametrize("store_kind", ["file (budget blocks)", "memory (KIS answers EGW00133)"])
def test_a_one_off_egw00123_after_issuance_keeps_the_token_while_reissue_is_blocked(
    emulator: KISEmulator, tmp_path: Path, store_kind: str
) -> None:
    store = FileTokenStore(tmp_path / "tokens") if store_kind.startswith("file") else InMemoryTokenStore()
    with build_runtime(_settings(emulator.base_url), store=store) as runtime:
        _quote(runtime)
        token = runtime.cache.peek()
        emulator.inject_fault("error_code", count=1, path=PRICE_PATH, msg_cd="EGW00123", status=500)

        answers = [_quote(runtime) for _ in range(3)]  # the first meets the one-off EGW00123

        assert len(answers) == 3
        assert runtime.cache.peek() == token, "the previous token is still the one served"
    assert _token_requests(emulator) <= 2, "at most the one blocked reissue"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("EGW00103", CredentialsRejectedError),
        ("EGW00105", CredentialsRejectedError),
        ("EGW02004", WrongModeError),
    ],
)
def test_a_rejected_key_is_remembered_so_a_loop_sends_one_tokenp(
    emulator: KISEmulator, code: str, error: type[Exception]
) -> None:
    emulator.inject_fault("error_code", count=100, path=TOKEN_PATH, msg_cd=code, status=403)
    with build_runtime(_settings(emulator.base_url), store=InMemoryTokenStore()) as runtime:
        for _ in range(5):
            with pytest.raises(error):
                _quote(runtime)
    assert _token_requests(emulator) == 1


def test_a_wrong_secret_is_remembered_so_a_loop_sends_one_tokenp(emulator: KISEmulator) -> None:
    wrong = "W" * 179 + "x"
    with build_runtime(_settings(emulator.base_url, secret=wrong), store=InMemoryTokenStore()) as runtime:
        for _ in range(5):
            with pytest.raises(CredentialsRejectedError):
                _quote(runtime)
    assert _token_requests(emulator) == 1


def test_a_refused_connection_does_not_count_against_the_tokenp_budget(
    emulator: KISEmulator, tmp_path: Path
) -> None:
    folder = tmp_path / "tokens"
    nowhere = build_runtime(_settings(closed_url()), store=FileTokenStore(folder))
    with nowhere, pytest.raises(BrokerUnavailableError):
        nowhere.access_token()
    # The server is up now: the next process issues at once (no IssuanceRateLimitedError).
    with build_runtime(_settings(emulator.base_url), store=FileTokenStore(folder)) as runtime:
        runtime.access_token()
    assert _token_requests(emulator) == 1


class HTTPSKIS(LoopbackHTTPServer):
    methods = frozenset({"POST", "GET"})

    def __init__(self, cert: trustme.LeafCert) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.tokens = 0
        super().__init__(tls=context)

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        self.tokens += 1
        return Reply(200, json.dumps(token_reply(APP_KEY, datetime.now(UTC))).encode())


def test_fixing_the_ca_bundle_after_a_tls_failure_costs_no_wait(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "corporate-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = HTTPSKIS(ca.issue_cert(LOOPBACK))
    folder = tmp_path / "tokens"
    try:
        untrusting = build_runtime(_settings(server.url), store=FileTokenStore(folder))
        with untrusting, pytest.raises(TLSVerificationError):
            untrusting.access_token()
        with build_runtime(_settings(server.url, ca=ca_file), store=FileTokenStore(folder)) as fixed:
            fixed.access_token()  # at once: the failed handshake sent no tokenP
    finally:
        server.close()
    assert server.tokens == 1
