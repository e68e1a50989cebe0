"""KISBrokerAdapter.send over real HTTP on 127.0.0.1: mode branching, headers, paging, errors, retries.

Header assertions use the ``capture`` server (stdlib http.server keeps ``tr_id``/``tr_cont``,
which werkzeug drops); status and body scenarios use pytest-httpserver. Facts: KIS_API.md §1,
§5, §9, §10.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from runtime.broker.base import BrokerRequest, BrokerScope, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import FakeClock, SystemClock
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerCallError,
    BrokerUnavailableError,
    CallRateLimitedError,
    CredentialsRejectedError,
    IssuanceRateLimitedError,
    MalformedResponseError,
    OrderRefusedError,
    QTSError,
    ScopeMismatchError,
    TokenRejectedError,
    WrongModeError,
)
from runtime.masking import fingerprint
from tests.support.kis import (
    BALANCE_PATH,
    NOW,
    PRICE_PARAMS,
    PRICE_PATH,
    REAL_KEY,
    REAL_SECRET,
    VTS_KEY,
    VTS_SECRET,
    MakeAdapter,
    own_token,
    recorded,
    within,
)
from tests.support.secrets import assert_no_secrets, reachable_text
from tests.support.servers import CaptureServer, ResetMidBodyServer, SilentServer

ORDER = "/uapi/domestic-stock/v1/trading/order-cash"


def _price(tr_cont: str = "") -> BrokerRequest:
    return BrokerRequest("GET", PRICE_PATH, "FHKST01010100", params=PRICE_PARAMS, tr_cont=tr_cont)


def _serve(
    httpserver: HTTPServer,
    body: Mapping[str, Any] | bytes | str,
    status: int = 200,
    *,
    path: str = PRICE_PATH,
    method: str = "GET",
    content_type: str = "application/json",
) -> None:
    handler = httpserver.expect_request(path, method=method)
    if isinstance(body, Mapping):
        handler.respond_with_json(dict(body), status=status)
    else:
        handler.respond_with_data(body, status=status, content_type=content_type)


def _send_fails(
    adapter: KISBrokerAdapter,
    expected: type[QTSError],
    request: BrokerRequest | None = None,
    deadline: Deadline | None = None,
) -> QTSError:
    token = own_token(adapter.mode)
    with pytest.raises(expected) as caught:
        adapter.send(request or _price(), token, deadline=deadline or within())
    assert_no_secrets(caught.value, token.value)
    return caught.value


# --- MODE -> environment ---------------------------------------------------------------------


def test_vts_without_override_targets_the_official_vts_host(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(None, Mode.VTS)

    assert adapter.base_url == "https://openapivts.koreainvestment.com:29443"
    assert adapter.scope == BrokerScope(Mode.VTS, fingerprint(VTS_KEY))


def test_real_without_override_targets_the_official_real_host(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(None, Mode.REAL)

    assert adapter.base_url == "https://openapi.koreainvestment.com:9443"
    assert adapter.scope == BrokerScope(Mode.REAL, fingerprint(REAL_KEY))


def test_base_url_override_replaces_the_official_host(make_adapter: MakeAdapter) -> None:
    assert make_adapter("http://127.0.0.1:1/", Mode.REAL).base_url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("mode", "tr_id", "sent"),
    [
        (Mode.VTS, "TTTC8434R", "VTTC8434R"),
        (Mode.VTS, "JTCE5005R", "VTCE5005R"),
        (Mode.VTS, "CTSC9115R", "VTSC9115R"),
        (Mode.VTS, "FHKST01010100", "FHKST01010100"),
        (Mode.REAL, "TTTC8434R", "TTTC8434R"),
        (Mode.REAL, "JTCE5005R", "JTCE5005R"),
        (Mode.REAL, "CTSC9115R", "CTSC9115R"),
        (Mode.REAL, "FHKST01010100", "FHKST01010100"),
    ],
)
def test_tr_id_received_by_the_server_is_mapped_for_vts_and_kept_for_real(
    capture: CaptureServer, make_adapter: MakeAdapter, mode: Mode, tr_id: str, sent: str
) -> None:
    adapter = make_adapter(capture.url, mode)

    adapter.send(BrokerRequest("GET", BALANCE_PATH, tr_id), own_token(mode), deadline=within())

    [request] = capture.requests
    assert request.header("tr_id") == sent


# --- what a call sends -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "key", "secret"), [(Mode.VTS, VTS_KEY, VTS_SECRET), (Mode.REAL, REAL_KEY, REAL_SECRET)]
)
def test_call_sends_bearer_token_app_key_secret_tr_id_and_custtype_p(
    capture: CaptureServer, make_adapter: MakeAdapter, mode: Mode, key: str, secret: str
) -> None:
    token = own_token(mode)

    make_adapter(capture.url, mode).send(_price(), token, deadline=within())

    [request] = capture.requests
    assert request.method == "GET"
    assert request.path == PRICE_PATH
    assert request.header("authorization") == f"Bearer {token.value}"
    assert request.header("appkey") == key
    assert request.header("appsecret") == secret
    assert request.header("tr_id") == "FHKST01010100"
    assert request.header("custtype") == "P"
    assert (request.header("content-type") or "").startswith("application/json")


@pytest.mark.parametrize("tr_cont", ["", "N"], ids=["first-page", "next-page"])
def test_call_sends_tr_cont_empty_for_the_first_page_and_n_for_the_next(
    capture: CaptureServer, make_adapter: MakeAdapter, tr_cont: str
) -> None:
    make_adapter(capture.url).send(_price(tr_cont), own_token(), deadline=within())

    [request] = capture.requests
    assert request.header("tr_cont") == tr_cont


def test_get_call_passes_its_query_parameters(capture: CaptureServer, make_adapter: MakeAdapter) -> None:
    make_adapter(capture.url).send(_price(), own_token(), deadline=within())

    [request] = capture.requests
    assert {name: values for name, values in request.query.items()} == {
        "FID_COND_MRKT_DIV_CODE": ["J"],
        "FID_INPUT_ISCD": ["005930"],
    }
    assert request.body == b""


def test_post_call_sends_its_body_as_json(capture: CaptureServer, make_adapter: MakeAdapter) -> None:
    body = {"CANO": "50012345", "ACNT_PRDT_CD": "01"}

    make_adapter(capture.url).send(
        BrokerRequest("POST", BALANCE_PATH, "TTTC8434R", body=body), own_token(), deadline=within()
    )

    [request] = capture.requests
    assert request.method == "POST"
    assert request.json() == body
    assert request.header("tr_id") == "VTTC8434R"


# --- what a call returns ---------------------------------------------------------------------


def test_response_carries_the_body_and_the_tr_id_tr_cont_gt_uid_headers(
    capture: CaptureServer, make_adapter: MakeAdapter
) -> None:
    body = recorded("inquire_price_success")
    capture.reply(200, body, {"tr_id": "FHKST01010100", "tr_cont": "D", "gt_uid": "G123456789"})

    answer = make_adapter(capture.url).send(_price(), own_token(), deadline=within())

    assert answer.status == 200
    assert dict(answer.body) == body
    assert answer.body["output"]["stck_prpr"] == "128500"
    assert (answer.tr_id, answer.tr_cont, answer.gt_uid) == ("FHKST01010100", "D", "G123456789")
    assert answer.msg_cd == "MCA00000"


@pytest.mark.parametrize(("tr_cont", "more"), [("M", True), ("F", True), ("D", False), ("E", False)])
def test_has_next_page_follows_the_tr_cont_response_header(
    capture: CaptureServer, make_adapter: MakeAdapter, tr_cont: str, more: bool
) -> None:
    capture.reply(200, recorded("inquire_price_success"), {"tr_cont": tr_cont})

    assert make_adapter(capture.url).send(_price(), own_token(), deadline=within()).has_next_page is more


def test_token_of_another_scope_is_refused_before_any_request(
    capture: CaptureServer, make_adapter: MakeAdapter
) -> None:
    real_token = own_token(Mode.REAL)

    with pytest.raises(ScopeMismatchError) as caught:
        make_adapter(capture.url, Mode.VTS).send(_price(), real_token, deadline=within())

    assert capture.requests == []
    assert_no_secrets(caught.value, real_token.value)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_order_path_is_refused_before_any_request(
    capture: CaptureServer, make_adapter: MakeAdapter, method: str
) -> None:
    order = BrokerRequest(method, ORDER, "TTTC0012U", body={"PDNO": "005930"} if method == "POST" else None)

    _send_fails(make_adapter(capture.url), OrderRefusedError, order)

    assert capture.requests == []


def test_adapter_holds_no_token_after_a_call(capture: CaptureServer, make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(capture.url)
    token = own_token()

    adapter.send(_price(), token, deadline=within())

    assert token.value not in repr(vars(adapter))
    assert not [text for text in reachable_text(adapter) if token.value in text]


# --- KIS error codes on a call (rt_cd shape), at HTTP 500 and at HTTP 200 ---------------------

STATUSES = pytest.mark.parametrize("status", [500, 200])


def _call_error(code: str) -> dict[str, Any]:
    try:
        return recorded(f"call_{code.lower()}")
    except FileNotFoundError:
        return {"rt_cd": "1", "msg1": f"{code} 오류", "msg_cd": code}


@STATUSES
@pytest.mark.parametrize("code", ["EGW00102", "EGW00103", "EGW00104", "EGW00105", "EGW00112", "EGW00115"])
def test_call_credential_codes_raise_credentials_rejected(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, code: str, status: int
) -> None:
    _serve(httpserver, _call_error(code), status)

    error = _send_fails(make_adapter(kis_url), CredentialsRejectedError)

    assert error.code == code
    assert not isinstance(error, WrongModeError)


@STATUSES
def test_call_egw00133_is_issuance_rate_limited_for_sixty_seconds(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve(httpserver, _call_error("EGW00133"), status)

    error = _send_fails(make_adapter(kis_url), IssuanceRateLimitedError)

    assert isinstance(error, IssuanceRateLimitedError)
    assert error.retry_after == timedelta(seconds=60)


@STATUSES
@pytest.mark.parametrize(("code", "expired"), [("EGW00121", False), ("EGW00122", False), ("EGW00123", True)])
def test_call_token_codes_raise_token_rejected_expired_only_for_123(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, code: str, expired: bool, status: int
) -> None:
    _serve(httpserver, _call_error(code), status)

    error = _send_fails(make_adapter(kis_url), TokenRejectedError)

    assert isinstance(error, TokenRejectedError)
    assert error.code == code
    assert error.expired is expired


@STATUSES
def test_call_egw00201_is_call_rate_limited(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve(httpserver, recorded("call_egw00201"), status)

    error = _send_fails(make_adapter(kis_url), CallRateLimitedError)

    assert isinstance(error, CallRateLimitedError)
    assert error.code == "EGW00201"
    assert error.retry_after > timedelta(0)


@STATUSES
def test_call_egw02004_is_wrong_mode_and_credentials_rejected(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve(httpserver, recorded("call_egw02004"), status)

    error = _send_fails(make_adapter(kis_url, Mode.REAL), WrongModeError)

    assert isinstance(error, CredentialsRejectedError)
    assert error.code == "EGW02004"


@STATUSES
def test_call_unknown_code_is_a_broker_call_error_with_code_and_status(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve(httpserver, {"rt_cd": "1", "msg1": "모의투자 TR 이 아닙니다.", "msg_cd": "EGW09999"}, status)

    error = _send_fails(make_adapter(kis_url), BrokerCallError)

    assert isinstance(error, BrokerCallError)
    assert error.code == "EGW09999"
    assert error.status == status


@STATUSES
def test_call_egw00001_is_broker_unavailable(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve(httpserver, _call_error("EGW00001"), status)

    error = _send_fails(make_adapter(kis_url), BrokerUnavailableError)

    assert error.code == "EGW00001"
    assert error.retryable


@STATUSES
def test_call_failure_rt_cd_without_a_code_is_a_broker_call_error(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, status: int
) -> None:
    _serve(httpserver, {"rt_cd": "7", "msg1": "오류"}, status)

    error = _send_fails(make_adapter(kis_url), BrokerCallError)

    assert error.code is None


def test_call_answer_missing_rt_cd_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve(httpserver, {"output": {"stck_prpr": "128500"}, "msg_cd": "MCA00000"})

    _send_fails(make_adapter(kis_url), MalformedResponseError)


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>ok</html>", b"[1, 2, 3]", b'{"rt_cd": "0", "msg1": "\xff"}'],
    ids=["empty", "not-json", "json-array", "not-utf8"],
)
def test_call_unreadable_200_body_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, body: bytes
) -> None:
    _serve(httpserver, body)

    _send_fails(make_adapter(kis_url), MalformedResponseError)


def test_call_html_404_is_malformed(httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter) -> None:
    _serve(httpserver, "<html>Not Found</html>", 404, content_type="text/html")

    _send_fails(make_adapter(kis_url), MalformedResponseError)
    assert len(httpserver.log) == 1


def test_call_body_over_one_mebibyte_is_malformed(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve(httpserver, {**recorded("inquire_price_success"), "padding": "x" * (1024 * 1024)})

    _send_fails(make_adapter(kis_url), MalformedResponseError)


# --- retries ---------------------------------------------------------------------------------


def test_get_answered_502_twice_then_200_is_retried_and_succeeds(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    for _ in range(2):
        httpserver.expect_oneshot_request(PRICE_PATH, method="GET").respond_with_data(
            "<html>502 Bad Gateway</html>", status=502, content_type="text/html"
        )
    _serve(httpserver, recorded("inquire_price_success"))

    answer = make_adapter(kis_url).send(_price(), own_token(), deadline=within())

    assert answer.body["rt_cd"] == "0"
    assert [response.status_code for _request, response in httpserver.log] == [502, 502, 200]


def test_get_answered_html_502_every_time_gives_up_as_unavailable(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve(httpserver, "<html>502 Bad Gateway</html>", 502, content_type="text/html")

    _send_fails(make_adapter(kis_url), BrokerUnavailableError)

    assert len(httpserver.log) == 3


def test_post_call_answered_502_is_not_retried(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve(httpserver, "<html>502</html>", 502, path=BALANCE_PATH, method="POST", content_type="text/html")
    request = BrokerRequest("POST", BALANCE_PATH, "TTTC8434R", body={"CANO": "50012345"})

    _send_fails(make_adapter(kis_url), BrokerUnavailableError, request)

    assert len(httpserver.log) == 1


def test_get_answered_500_with_a_code_is_not_retried(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    _serve(httpserver, recorded("call_egw00201"), 500)

    _send_fails(make_adapter(kis_url), CallRateLimitedError)

    assert len(httpserver.log) == 1


def test_connection_refused_on_a_call_is_unavailable_and_never_sent(
    closed_url: str, make_adapter: MakeAdapter
) -> None:
    error = _send_fails(make_adapter(closed_url), BrokerUnavailableError)

    assert isinstance(error, BrokerUnavailableError)
    assert error.request_sent is False


def test_get_to_a_server_that_never_answers_is_unavailable_within_the_timeout(
    silent_server: SilentServer, make_adapter: MakeAdapter
) -> None:
    # The real clock: the deadline that bounds the retries must see real time pass.
    adapter = make_adapter(silent_server.url, clock=SystemClock())
    started = time.monotonic()

    _send_fails(adapter, BrokerUnavailableError, deadline=within(1.0, SystemClock()))

    assert time.monotonic() - started <= 1.0 + 1.0


def test_the_calls_deadline_bounds_the_adapter_not_a_default_of_its_own(
    silent_server: SilentServer, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter(silent_server.url, clock=SystemClock())
    token = own_token()
    started = time.monotonic()

    with pytest.raises(BrokerUnavailableError):
        adapter.send(_price(), token, deadline=within(0.5, SystemClock()))

    assert time.monotonic() - started <= 0.5 + 1.0


def test_get_reset_in_the_middle_of_the_body_is_unavailable_after_retries(
    reset_server: ResetMidBodyServer, make_adapter: MakeAdapter
) -> None:
    _send_fails(make_adapter(reset_server.url), BrokerUnavailableError)

    assert reset_server.connections == 3  # a GET may be repeated after a broken answer


def test_post_reset_in_the_middle_of_the_body_is_not_retried(
    reset_server: ResetMidBodyServer, make_adapter: MakeAdapter
) -> None:
    request = BrokerRequest("POST", BALANCE_PATH, "TTTC8434R", body={"CANO": "50012345"})

    _send_fails(make_adapter(reset_server.url), BrokerUnavailableError, request)

    assert reset_server.connections == 1


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "secret"), [("AppKey", VTS_KEY), ("AppSecret", VTS_SECRET)])
def test_msg1_echoing_the_app_key_or_secret_is_masked(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, field: str, secret: str
) -> None:
    _serve(httpserver, {"rt_cd": "1", "msg_cd": "EGW00105", "msg1": f"{field}={secret}"}, 500)

    error = _send_fails(make_adapter(kis_url), CredentialsRejectedError)

    assert secret[:16] not in str(error)
    assert f"{field}=[redacted]" in str(error)


def test_msg1_echoing_the_access_token_does_not_leak_it(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter
) -> None:
    token = own_token(value=secrets.token_urlsafe(40))
    _serve(
        httpserver, {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": f"유효하지 않은 token: {token.value}"}, 500
    )

    with pytest.raises(TokenRejectedError) as caught:
        make_adapter(kis_url).send(_price(), token, deadline=within())

    assert_no_secrets(caught.value, token.value)


def test_every_call_error_message_is_free_of_key_secret_and_token(
    httpserver: HTTPServer, kis_url: str, make_adapter: MakeAdapter, clock: FakeClock
) -> None:
    """A sweep over every code at once, in case a leaf formats its message differently."""
    codes = ["EGW00102", "EGW00105", "EGW00121", "EGW00123", "EGW00133", "EGW00201", "EGW02004"]
    adapter = make_adapter(kis_url)
    token = own_token()
    for code in codes:
        httpserver.expect_oneshot_request(PRICE_PATH).respond_with_data(
            json.dumps(_call_error(code)), status=500, content_type="application/json"
        )
        with pytest.raises(QTSError) as caught:
            adapter.send(_price(), token, deadline=within())
        assert caught.value.code == code
        assert_no_secrets(caught.value, token.value)
    assert clock.now() == NOW  # no test here needed time to pass
