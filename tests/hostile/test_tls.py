"""TLS over real HTTPS on loopback with a throwaway ``trustme`` CA.

Verification is on by default and cannot be switched off; an unknown CA or a certificate for
another host name ends in TLSVerificationError (``qts`` exit 4, with a hint); KIS_CA_BUNDLE
adds a CA (a corporate proxy's) on top of the system store.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import attrs
import pytest
import trustme

from runtime.bootstrap import build_http
from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import SystemClock
from runtime.config import ENV_VARIABLES
from runtime.deadline import Deadline
from runtime.errors import ConfigError, TLSVerificationError
from runtime.settings import Settings
from tests.support.kis import token_reply, within
from tests.support.scripted_kis import APP_KEY, APP_SECRET, cli_env, run_cli
from tests.support.servers import LOOPBACK, LoopbackHTTPServer, Reply

LIMIT_S = 5.0


class HTTPSKIS(LoopbackHTTPServer):
    """An ``ssl``-wrapped stdlib server answering every POST with a tokenP success."""

    methods = frozenset({"POST"})

    def __init__(self, cert: trustme.LeafCert) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.requests = 0
        super().__init__(tls=context)

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        self.requests += 1
        return Reply(200, json.dumps(token_reply(APP_KEY, datetime.now(UTC))).encode())


@attrs.frozen
class Pki:
    ca_file: Path
    other_ca_file: Path  # a CA that signed nothing this server presents
    good: HTTPSKIS  # a certificate for 127.0.0.1 signed by the CA
    wrong_host: HTTPSKIS  # signed by the same CA, but for another name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("pki") / "corporate-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca_file = ca_file.with_name("other-ca.pem")
    trustme.CA().cert_pem.write_to_path(str(other_ca_file))
    good = HTTPSKIS(ca.issue_cert(LOOPBACK))
    wrong_host = HTTPSKIS(ca.issue_cert("kis.example.test"))
    yield Pki(ca_file, other_ca_file, good, wrong_host)
    good.close()
    wrong_host.close()


def _adapter(base_url: str, ca_file: Path | None) -> KISBrokerAdapter:
    return KISBrokerAdapter(
        Mode.VTS, AppCredentials(APP_KEY, APP_SECRET), build_http(ca_file), base_url=base_url
    )


def _two_seconds() -> Deadline:
    return within(2.0, SystemClock())


def test_verification_is_on_by_default_an_unknown_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(TLSVerificationError, match="KIS_CA_BUNDLE"):
        _adapter(pki.good.url, None).issue_token(deadline=_two_seconds())


def test_a_bundle_with_the_wrong_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(TLSVerificationError):
        _adapter(pki.good.url, pki.other_ca_file).issue_token(deadline=_two_seconds())


def test_the_ca_bundle_adds_a_trusted_ca(pki: Pki) -> None:
    token = _adapter(pki.good.url, pki.ca_file).issue_token(deadline=_two_seconds())
    assert token.token_type == "Bearer"


def test_a_certificate_for_another_host_name_is_refused_even_from_a_trusted_ca(pki: Pki) -> None:
    with pytest.raises(TLSVerificationError):
        _adapter(pki.wrong_host.url, pki.ca_file).issue_token(deadline=_two_seconds())


def test_qts_token_over_https(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown CA: exit 4 with a KIS_CA_BUNDLE hint; with KIS_CA_BUNDLE: exit 0; wrong host: exit 4."""
    cli_env(monkeypatch, tmp_path, pki.good.url, deadline_s=2.0, store="memory")
    refused = run_cli(["token"], capsys, limit_s=LIMIT_S)
    assert refused.exit_code == 4, str(refused)
    assert "KIS_CA_BUNDLE" in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if not line.startswith("qts: note: ")]) <= 2
    assert "Traceback" not in refused.stderr

    monkeypatch.setenv("KIS_CA_BUNDLE", str(pki.ca_file))
    accepted = run_cli(["token"], capsys, limit_s=LIMIT_S)
    assert accepted.exit_code == 0, str(accepted)

    monkeypatch.setenv("KIS_VTS_BASE_URL", pki.wrong_host.url)
    wrong_host = run_cli(["token"], capsys, limit_s=LIMIT_S)
    assert wrong_host.exit_code == 4, str(wrong_host)


def test_a_ca_bundle_that_is_not_a_certificate_is_a_config_error(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "not-a-ca.pem"
    junk.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="KIS_CA_BUNDLE"):
        build_http(junk)
    cli_env(monkeypatch, tmp_path, pki.good.url, deadline_s=2.0, store="memory")
    monkeypatch.setenv("KIS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    missing = run_cli(["token"], capsys, limit_s=LIMIT_S)
    assert missing.exit_code == 2, str(missing)
    assert "KIS_CA_BUNDLE" in missing.stderr


@pytest.mark.parametrize(
    "variable",
    [
        "KIS_SSL_VERIFY=false",
        "KIS_VERIFY=0",
        "QTS_INSECURE=1",
        "QTS_TLS_VERIFY=false",
        "PYTHONHTTPSVERIFY=0",
        "CURL_CA_BUNDLE=",
        "REQUESTS_CA_BUNDLE=",
    ],
)
def test_verification_cannot_be_switched_off(
    variable: str,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No setting turns verification off; switches other tools honour are ignored."""
    name, _, value = variable.partition("=")
    cli_env(monkeypatch, tmp_path, pki.good.url, deadline_s=2.0, store="memory", extra={name: value})
    run = run_cli(["token"], capsys, limit_s=LIMIT_S)
    assert run.exit_code == 4, str(run)


def test_there_is_no_setting_for_insecure_tls() -> None:
    names = [f.name for f in attrs.fields(Settings)] + list(ENV_VARIABLES)
    insecure = [n for n in names if any(w in n.lower() for w in ("verify", "insecure", "ssl", "tls_off"))]
    assert insecure == []
    # The context is made with the first HTTPS pool; creating a pool opens no connection.
    context = build_http(None).connection_from_url("https://127.0.0.1:9/").conn_kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
