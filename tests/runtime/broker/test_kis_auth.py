"""tokenP / revokeP over real HTTP on 127.0.0.1: the request, every success shape, every failure.

Shapes and codes follow /work/shared/kis/KIS_API.md (§2 tokenP, §4 token-endpoint errors,
§6 revokeP). Each failure test also checks that no key, secret or token rides out in the error.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.auth import REVOKE_PATH, TOKEN_PATH
from runtime.clock import FakeClock
from runtime.errors import (
    BrokerCallError,
    BrokerUnavailableError,
    CallRateLimitedError,
    CredentialsRejectedError,
    ForeignTokenError,
    IssuanceRateLimitedError,
    MalformedResponseError,
    QTSError,
    ScopeMismatchError,
    TokenRejectedError,
    WrongModeError,
)
from tests.support.kis import (
    NOW,
    REAL_KEY,
    VTS_KEY,
    VTS_SECRET,
    MakeAdapter,
    jwt,
    own_token,
    recorded,
    token_reply,
    within,
)
from tests.support.secrets import assert_no_secrets, reachable_text
from tests.support.servers import CaptureServer, ResetMidBodyServer, SilentServer


def _serve_token(httpserver: HTTPServer, body: Mapping[str, Any] | bytes, status: int = 200) -> None:
    handler = httpserver.expect_request(TOKEN_PATH, method="POST")
    if isinstance(body, bytes):
        handler.respond_with_data(body, status=status, content_type="application/json")
    else:
        handler.respond_with_json(dict(body), status=status)


def _issue_fails(
    make_adapter: MakeAdapter, kis_url: str, expected: type[QTSError], *tokens: object
) -> QTSError:
    """Issue, expect ``expected``, and check that no secret nor any served token shows in it."""
    adapter = make_adapter(kis_url)
    with pytest.raises(expected) as caught:
        adapter.issue_token(deadline=within())
    assert_no_secrets(caught.value, *(t for t in tokens if isinstance(t, str) and len(t) > 8))
    return caught.value


# --- the request -----------------------------------------------------------------------------


def test_token_request_is_a_json_post_of_grant_type_appkey_and_appsecret_only(
    capture: CaptureServer, make_adapter: MakeAdapter
) -> None:
    capture.reply(200, token_reply(VTS_KEY, NOW))
    make_adapter(capture.url).issue_token(deadline=within())

    [request] = capture.requests
    assert request.method == "POST"
    assert request.path == TOKEN_PATH
    assert request.json() == {
        "grant_type": "client_credentials",
        "appkey": VTS_KEY,
        "appsecret": VTS_SECRET,
    }
    assert (request.header("content-type") or "").startswith("application/json")


def test_token_request_carries_no_authorization_appkey_or_appsecret_header(
    capture: CaptureServer, make_adapter: MakeAdapter
) -> None:
    capture.reply(200, token_reply(VTS_KEY, NOW))
    make_adapter(capture.url).issue_token(deadline=within())

    [request] = capture.requests
    assert not {"authorization", "appkey", "appsecret", "tr_id"} & request.header_names()


# --- success ---------------------------------------------------------------------------------


def test_issued_token_expires_at_the_kst_expiry_string_made_aware(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    clock.set_wall(datetime(2026, 1, 4, 12, 0, tzinfo=UTC))
    reply = token_reply(VTS_KEY, clock.now())
    reply["access_token_token_expired"] = "2026-01-05 09:00:00"  # KST
    _serve_token(httpserver, reply)

    token = make_adapter(kis_url).issue_token(deadline=within())

    assert token.expires_at == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    assert token.expires_at.utcoffset() == timedelta(0)


def test_issued_token_is_stamped_with_clock_now_the_adapter_scope_and_bearer(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    reply = token_reply(VTS_KEY, clock.now())
    _serve_token(httpserver, reply)
    adapter = make_adapter(kis_url)

    token = adapter.issue_token(deadline=within())

    assert token.value == reply["access_token"]
    assert token.issued_at == clock.now()
    assert token.scope == adapter.scope
    assert token.token_type == "Bearer"
    assert token.authorization == f"Bearer {reply['access_token']}"


@pytest.mark.parametrize(
    ("expiry_string_lifetime", "expires_in", "lifetime"),
    [
        # expires_in is used only when the expiry string is absent
        (None, 3600, timedelta(seconds=3600)),
        # the expiry string wins over a disagreeing expires_in, without error (§3: seen after
        # the 6-hour reuse; no reference time)
        (timedelta(hours=20), 4000, timedelta(hours=20)),
    ],
    ids=["expires-in-when-the-expiry-string-is-absent", "expiry-string-wins-over-expires-in"],
)
def test_expiry_comes_from_the_expiry_string_else_from_expires_in(
    httpserver: HTTPServer,
    kis_url: str,
    make_adapter: MakeAdapter,
    clock: FakeClock,
    expiry_string_lifetime: timedelta | None,
    expires_in: int,
    lifetime: timedelta,
) -> None:
    if expiry_string_lifetime is None:
        reply = token_reply(VTS_KEY, clock.now())
        del reply["access_token_token_expired"]
    else:
        reply = token_reply(VTS_KEY, clock.now(), expiry_string_lifetime)
    reply["expires_in"] = expires_in
    _serve_token(httpserver, reply)

    token = make_adapter(kis_url).issue_token(deadline=within())

    assert token.expires_at == clock.now() + lifetime


def test_recorded_token_success_parses_when_the_clock_is_before_its_expiry(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    clock.set_wall(datetime(2023, 12, 21, 8, 0, tzinfo=UTC))  # 17:00 KST, the day before
    body = recorded("token_success")
    _serve_token(httpserver, body)

    token = make_adapter(kis_url).issue_token(deadline=within())

    assert token.value == body["access_token"]
    assert token.expires_at == datetime(2023, 12, 21, 23, 16, 59, tzinfo=UTC)  # 08:16:59 KST


# --- jti -------------------------------------------------------------------------------------


def test_token_whose_jwt_jti_names_another_app_key_is_refused_as_foreign(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    reply = token_reply(VTS_KEY, clock.now(), value=jwt(REAL_KEY, clock.now()))
    _serve_token(httpserver, reply)

    error = _issue_fails(make_adapter, kis_url, ForeignTokenError, reply["access_token"])

    assert isinstance(error, MalformedResponseError)


@pytest.mark.parametrize(
    "make_value",
    [lambda now: jwt(VTS_KEY, now), lambda _now: secrets.token_urlsafe(48)],
    ids=["jwt-whose-jti-is-our-app-key", "opaque-non-jwt"],
)
def test_token_is_accepted_when_its_jti_is_our_app_key_or_it_is_not_a_jwt(
    httpserver: HTTPServer,
    kis_url: str,
    make_adapter: MakeAdapter,
    clock: FakeClock,
    make_value: Callable[[datetime], str],
) -> None:
    value = make_value(clock.now())
    _serve_token(httpserver, token_reply(VTS_KEY, clock.now(), value=value))

    assert make_adapter(kis_url).issue_token(deadline=within()).value == value


# --- statelessness ---------------------------------------------------------------------------


def test_adapter_holds_no_token_after_issuing(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    reply = token_reply(VTS_KEY, clock.now())
    _serve_token(httpserver, reply)
    adapter = make_adapter(kis_url)
    before = set(vars(adapter))

    token = adapter.issue_token(deadline=within())

    assert set(vars(adapter)) == before
    reachable = list(reachable_text(adapter))
    assert any(VTS_SECRET in text for text in reachable)  # the walk does reach what it holds
    assert not [text for text in reachable if token.value in text]
    assert token.value not in repr(vars(adapter))


# --- token-endpoint error codes (§4 shape, HTTP 403) -----------------------------------------


def _token_error(code: str) -> dict[str, Any]:
    name = f"token_{code.lower()}"
    try:
        return recorded(name)
    except FileNotFoundError:
        return {"error_description": f"{code} 설명", "error_code": code}


@pytest.mark.parametrize("code", ["EGW00102", "EGW00103", "EGW00104", "EGW00105", "EGW00112", "EGW00115"])
def test_tokenp_credential_codes_raise_credentials_rejected(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, code: str
) -> None:
    _serve_token(httpserver, _token_error(code), status=403)

    error = _issue_fails(make_adapter, kis_url, CredentialsRejectedError)

    assert error.code == code
    assert not isinstance(error, WrongModeError)


def test_tokenp_egw00133_is_issuance_rate_limited_for_sixty_seconds(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(httpserver, recorded("token_egw00133"), status=403)

    error = _issue_fails(make_adapter, kis_url, IssuanceRateLimitedError)

    assert isinstance(error, IssuanceRateLimitedError)
    assert error.retry_after == timedelta(seconds=60)
    assert error.code == "EGW00133"
    assert error.retryable


@pytest.mark.parametrize("code", ["EGW00121", "EGW00122", "EGW00123"])
def test_tokenp_token_codes_raise_token_rejected(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, code: str
) -> None:
    _serve_token(httpserver, _token_error(code), status=403)

    error = _issue_fails(make_adapter, kis_url, TokenRejectedError)

    assert isinstance(error, TokenRejectedError)
    assert error.expired is (code == "EGW00123")


def test_tokenp_egw02004_is_wrong_mode_and_credentials_rejected(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(httpserver, _token_error("EGW02004"), status=403)

    error = _issue_fails(make_adapter, kis_url, WrongModeError)

    assert isinstance(error, CredentialsRejectedError)
    assert error.code == "EGW02004"


def test_tokenp_egw00201_is_call_rate_limited(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(httpserver, _token_error("EGW00201"), status=403)

    assert _issue_fails(make_adapter, kis_url, CallRateLimitedError).code == "EGW00201"


def test_tokenp_unknown_code_is_a_broker_call_error_carrying_the_code(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(httpserver, _token_error("EGW09999"), status=403)

    error = _issue_fails(make_adapter, kis_url, BrokerCallError)

    assert error.code == "EGW09999"


def test_tokenp_egw00001_is_broker_unavailable(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(httpserver, _token_error("EGW00001"), status=403)

    error = _issue_fails(make_adapter, kis_url, BrokerUnavailableError)

    assert error.code == "EGW00001"
    assert error.retryable


# --- transport failures ----------------------------------------------------------------------


def test_connection_refused_is_unavailable_and_the_request_was_never_sent(
    closed_url: str, make_adapter: MakeAdapter
) -> None:
    error = _issue_fails(make_adapter, closed_url, BrokerUnavailableError)

    assert isinstance(error, BrokerUnavailableError)
    assert error.request_sent is False


def test_server_that_never_answers_is_unavailable_within_the_timeout(
    silent_server: SilentServer, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter(silent_server.url)
    started = time.monotonic()

    with pytest.raises(BrokerUnavailableError) as caught:
        adapter.issue_token(deadline=within(1.0))

    assert time.monotonic() - started <= 1.0 + 1.0
    assert_no_secrets(caught.value)
    assert silent_server.connections == 1  # tokenP is never sent twice


def test_html_502_without_code_is_unavailable_and_tokenp_is_not_retried(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_data(
        "<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"
    )

    _issue_fails(make_adapter, kis_url, BrokerUnavailableError)

    assert len(httpserver.log) == 1


def test_reset_in_the_middle_of_the_body_is_unavailable(
    reset_server: ResetMidBodyServer, make_adapter: MakeAdapter
) -> None:
    _issue_fails(make_adapter, reset_server.url, BrokerUnavailableError)

    assert reset_server.connections == 1


def test_body_over_one_mebibyte_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    reply = token_reply(VTS_KEY, clock.now())
    reply["padding"] = "x" * (1024 * 1024)
    _serve_token(httpserver, reply)

    _issue_fails(make_adapter, kis_url, MalformedResponseError, reply["access_token"])


def test_html_404_is_malformed(httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter) -> None:
    httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_data(
        "<html><body>Not Found</body></html>", status=404, content_type="text/html"
    )

    _issue_fails(make_adapter, kis_url, MalformedResponseError)


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>ok</html>", b"[1, 2, 3]", b'{"access_token": "\xff\xfe"}'],
    ids=["empty", "not-json", "json-array", "not-utf8"],
)
def test_unreadable_200_body_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, body: bytes
) -> None:
    _serve_token(httpserver, body)

    _issue_fails(make_adapter, kis_url, MalformedResponseError)


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    "change",
    [
        lambda r: _without(r, "access_token"),
        lambda r: {**r, "access_token": 12345678901234567890},
        lambda r: _without(r, "token_type"),
        lambda r: {**r, "token_type": "MAC"},
    ],
    ids=["missing-access-token", "numeric-access-token", "missing-token-type", "token-type-mac"],
)
def test_token_reply_with_a_bad_token_field_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock, change: Any
) -> None:
    reply = change(token_reply(VTS_KEY, clock.now()))
    _serve_token(httpserver, reply)

    _issue_fails(make_adapter, kis_url, MalformedResponseError, reply.get("access_token"))


@pytest.mark.parametrize(
    "change",
    [
        lambda r: {**r, "access_token_token_expired": "2026-01-05 08:59:59"},  # 1 s ago (KST)
        lambda r: {**r, "access_token_token_expired": "2026/01/06 09:00"},
        lambda r: {**r, "access_token_token_expired": "2026-01-07 09:00:01"},  # 2 days + 1 s
        lambda r: _without(_without(r, "access_token_token_expired"), "expires_in"),
    ],
    ids=["in-the-past", "unparsable", "over-two-days", "neither-expiry-nor-expires-in"],
)
def test_token_reply_with_an_untrustworthy_expiry_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock, change: Any
) -> None:
    assert clock.now() == NOW
    reply = change(token_reply(VTS_KEY, clock.now()))
    _serve_token(httpserver, reply)

    _issue_fails(make_adapter, kis_url, MalformedResponseError, reply.get("access_token"))


def test_expiry_string_outside_the_datetime_range_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    """Year 1 KST is before datetime.min in UTC: the conversion overflows, which must not escape."""
    reply = {**token_reply(VTS_KEY, clock.now()), "access_token_token_expired": "0001-01-01 00:00:00"}
    _serve_token(httpserver, reply)

    _issue_fails(make_adapter, kis_url, MalformedResponseError)


@pytest.mark.parametrize("value", ["abc def" + "x" * 30, "abc\ndef" + "x" * 30, "abc\r\nX-Evil: 1"])
def test_token_containing_whitespace_or_newlines_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock, value: str
) -> None:
    _serve_token(httpserver, token_reply(VTS_KEY, clock.now(), value=value))

    _issue_fails(make_adapter, kis_url, MalformedResponseError, value)


# --- revokeP ---------------------------------------------------------------------------------


def _serve_revoke(httpserver: HTTPServer, body: Mapping[str, Any], status: int = 200) -> None:
    httpserver.expect_request(REVOKE_PATH, method="POST").respond_with_json(dict(body), status=status)


def test_revoke_request_is_a_json_post_of_appkey_appsecret_and_token(
    capture: CaptureServer, make_adapter: MakeAdapter
) -> None:
    token = own_token()
    capture.reply(200, recorded("revoke_success"))

    make_adapter(capture.url).revoke_token(token, deadline=within())

    [request] = capture.requests
    assert (request.method, request.path) == ("POST", REVOKE_PATH)
    assert request.json() == {"appkey": VTS_KEY, "appsecret": VTS_SECRET, "token": token.value}
    assert (request.header("content-type") or "").startswith("application/json")
    assert "authorization" not in request.header_names()


@pytest.mark.parametrize("code", [200, "200"], ids=["int", "string"])
def test_revoke_success_code_200_is_accepted_as_int_or_string(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, code: int | str
) -> None:
    _serve_revoke(httpserver, {**recorded("revoke_success"), "code": code})

    make_adapter(kis_url).revoke_token(own_token(), deadline=within())

    assert len(httpserver.log) == 1


@pytest.mark.parametrize("status", [200, 500])
def test_revoke_of_an_already_invalid_token_egw00121_counts_as_revoked(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve_revoke(httpserver, recorded("call_egw00121"), status=status)

    make_adapter(kis_url).revoke_token(own_token(), deadline=within())


def test_revoke_with_rejected_app_key_egw00103_raises_credentials_rejected(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    token = own_token()
    _serve_revoke(httpserver, recorded("token_egw00103"), status=403)

    with pytest.raises(CredentialsRejectedError) as caught:
        make_adapter(kis_url).revoke_token(token, deadline=within())

    assert caught.value.code == "EGW00103"
    assert_no_secrets(caught.value, token.value)


def test_revoke_of_a_token_from_another_scope_sends_nothing(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    token = own_token(Mode.REAL)

    with pytest.raises(ScopeMismatchError) as caught:
        make_adapter(kis_url).revoke_token(token, deadline=within())

    assert httpserver.log == []
    assert_no_secrets(caught.value, token.value)


def test_adapter_holds_no_token_after_revoking(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    token = own_token()
    _serve_revoke(httpserver, recorded("revoke_success"))
    adapter = make_adapter(kis_url)

    adapter.revoke_token(token, deadline=within())

    assert not [text for text in reachable_text(adapter) if token.value in text]


# --- secrets in messages and reprs -----------------------------------------------------------


def test_error_description_echoing_the_app_secret_is_masked(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(
        httpserver,
        {"error_description": f"유효하지 않은 AppSecret {VTS_SECRET}", "error_code": "EGW00105"},
        status=403,
    )

    error = _issue_fails(make_adapter, kis_url, CredentialsRejectedError)

    assert VTS_SECRET[:16] not in str(error)
    assert "AppSecret [redacted]" in str(error)


def test_error_description_echoing_the_app_key_is_masked(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve_token(
        httpserver, {"error_description": f"AppKey {VTS_KEY} 없음", "error_code": "EGW00103"}, status=403
    )

    error = _issue_fails(make_adapter, kis_url, CredentialsRejectedError)

    assert VTS_KEY[:16] not in str(error)
    assert "AppKey [redacted] 없음" in str(error)


def test_app_secret_echo_cut_short_by_the_message_cap_does_not_leak_in_part(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    """A long description is capped before masking: the cut secret must not survive the cap."""
    secret = secrets.token_urlsafe(135)[:180]
    creds = AppCredentials(VTS_KEY, secret)
    _serve_token(
        httpserver,
        {"error_description": "유효하지 않은 AppSecret입니다. 입력값=" + secret, "error_code": "EGW00105"},
        status=403,
    )

    with pytest.raises(CredentialsRejectedError) as caught:
        make_adapter(kis_url, creds=creds).issue_token(deadline=within())

    text = f"{caught.value} {caught.value!r}"
    leaked = [i for i in range(len(secret) - 24) if secret[i : i + 24] in text]
    assert not leaked, "24+ consecutive characters of the app secret appear in the error"


def test_repr_of_adapter_and_access_token_shows_no_key_secret_or_token(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    _serve_token(httpserver, token_reply(VTS_KEY, clock.now()))
    adapter = make_adapter(kis_url)
    token = adapter.issue_token(deadline=within())

    for text in (repr(adapter), str(adapter), repr(token), str(token)):
        for secret in (VTS_KEY, VTS_SECRET, token.value):
            assert secret not in text


def test_issued_token_reply_is_logged_masked_only(
    httpserver: HTTPServer,
    kis_url: str,
    make_adapter: MakeAdapter,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _serve_token(httpserver, token_reply(VTS_KEY, clock.now()))
    caplog.set_level("DEBUG")

    token = make_adapter(kis_url).issue_token(deadline=within())

    assert token.value not in caplog.text
    assert VTS_SECRET not in caplog.text
    assert json.dumps(token.value) not in caplog.text
