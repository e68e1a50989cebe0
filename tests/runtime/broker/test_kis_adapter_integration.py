"""Adapter <-> runtime integration over real HTTP on loopback (pytest-httpserver).

The server plays KIS: it issues tokens, accepts only the current one, and later reports it
expired, so the whole chain issue -> cache -> inject -> expired -> reissue -> retry runs
through the real composition root, the real urllib3 adapter and real sockets.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from runtime.bootstrap import build_runtime
from runtime.broker.base import Mode
from runtime.clock import FakeClock
from runtime.errors import OrderRefusedError, TokenRejectedError
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, credentials, recorded, settings_for, token_reply


class KISLikeServer:
    """Issues a new token per tokenP; a call succeeds only with the newest unexpired token."""

    def __init__(self, server: HTTPServer, clock: FakeClock, mode: Mode) -> None:
        self.clock = clock
        self.app_key = credentials(mode).app_key
        self.current: str | None = None
        self.expired: set[str] = set()
        self.token_requests = 0
        self.seen_tokens: list[str] = []
        self.expiry_status = 500
        server.expect_request("/oauth2/tokenP", method="POST").respond_with_handler(self.token)
        server.expect_request(PRICE_PATH, method="GET").respond_with_handler(self.price)

    def token(self, request: Request) -> Response:
        self.token_requests += 1
        body = json.loads(request.data)
        assert body == {
            "grant_type": "client_credentials",
            "appkey": self.app_key,
            "appsecret": body["appsecret"],
        }
        reply = token_reply(self.app_key, self.clock.now())
        self.current = reply["access_token"]
        return Response(json.dumps(reply), status=200, content_type="application/json")

    def price(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen_tokens.append(token)
        if token in self.expired:
            return Response(json.dumps(recorded("call_egw00123")), status=self.expiry_status)
        if token != self.current:
            return Response(json.dumps(recorded("call_egw00121")), status=500)
        return Response(
            json.dumps(recorded("inquire_price_success")), status=200, content_type="application/json"
        )


@pytest.fixture
def kis(httpserver: HTTPServer, clock: FakeClock) -> KISLikeServer:
    return KISLikeServer(httpserver, clock, Mode.VTS)


def test_issue_cache_inject_expire_reissue_retry(
    httpserver: HTTPServer, clock: FakeClock, kis: KISLikeServer
) -> None:
    runtime = build_runtime(settings_for(httpserver.url_for("/")), clock=clock)

    first = runtime.access_token()
    assert kis.token_requests == 1
    assert runtime.cache.last_source == "issued"

    assert runtime.access_token() == first  # cache hit, no network
    assert kis.token_requests == 1
    assert runtime.cache.last_source == "memory"

    answer = runtime.call("GET", PRICE_PATH, tr_id="FHKST01010100", params=PRICE_PARAMS)
    assert answer.body["output"]["stck_prpr"] == "128500"
    assert kis.seen_tokens == [first.value]  # the cached token was injected

    # KIS voids the token early (expired on the server while our clock says it is valid).
    kis.expired.add(first.value)
    clock.advance(3600)
    answer = runtime.call("GET", PRICE_PATH, tr_id="FHKST01010100", params=PRICE_PARAMS)
    assert answer.body["rt_cd"] == "0"
    assert kis.token_requests == 2
    assert kis.seen_tokens[1:] == [first.value, kis.current]
    assert runtime.access_token().value == kis.current != first.value


@pytest.mark.parametrize("status", [200, 500])
def test_expiry_is_recognised_by_code_whatever_the_http_status(
    httpserver: HTTPServer, clock: FakeClock, kis: KISLikeServer, status: int
) -> None:
    kis.expiry_status = status
    runtime = build_runtime(settings_for(httpserver.url_for("/")), clock=clock)
    kis.expired.add(runtime.access_token().value)
    assert runtime.call("GET", PRICE_PATH, tr_id="FHKST01010100", params=PRICE_PARAMS).body["rt_cd"] == "0"
    assert kis.token_requests == 2


def test_proactive_reissue_before_expiry_needs_no_rejected_call(
    httpserver: HTTPServer, clock: FakeClock, kis: KISLikeServer
) -> None:
    runtime = build_runtime(
        settings_for(httpserver.url_for("/"), refresh_margin=timedelta(minutes=10)), clock=clock
    )
    first = runtime.access_token()
    clock.advance(timedelta(hours=23, minutes=51).total_seconds())  # inside the 10-minute margin
    runtime.call("GET", PRICE_PATH, tr_id="FHKST01010100", params=PRICE_PARAMS)
    assert kis.token_requests == 2
    assert kis.seen_tokens == [kis.current]
    assert kis.current != first.value


def test_a_token_rejected_twice_surfaces_as_a_typed_error_without_looping(
    httpserver: HTTPServer, clock: FakeClock, kis: KISLikeServer
) -> None:
    runtime = build_runtime(settings_for(httpserver.url_for("/")), clock=clock)
    runtime.access_token()

    def always_expired(request: Request) -> Response:
        kis.seen_tokens.append(request.headers.get("authorization", ""))
        return Response(json.dumps(recorded("call_egw00123")), status=500)

    httpserver.clear_all_handlers()
    httpserver.expect_request("/oauth2/tokenP", method="POST").respond_with_handler(kis.token)
    httpserver.expect_request(PRICE_PATH, method="GET").respond_with_handler(always_expired)
    with pytest.raises(TokenRejectedError):
        runtime.call("GET", PRICE_PATH, tr_id="FHKST01010100", params=PRICE_PARAMS)
    assert len(kis.seen_tokens) == 2  # the first try and exactly one retry


def test_orders_never_reach_the_network(httpserver: HTTPServer, clock: FakeClock, kis: KISLikeServer) -> None:
    runtime = build_runtime(settings_for(httpserver.url_for("/")), clock=clock)
    with pytest.raises(OrderRefusedError):
        runtime.call(
            "POST", "/uapi/domestic-stock/v1/trading/order-cash", tr_id="TTTC0012U", body={"PDNO": "005930"}
        )
    assert kis.token_requests == 0
    assert len(httpserver.log) == 0
