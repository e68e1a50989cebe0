"""tokenP, revokeP, Approval and hashkey over real HTTP: shapes, timing rules and error codes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import urllib3

from kis_emulator import (
    DEMO_REAL_ACCOUNT,
    DEMO_VTS_ACCOUNT,
    EmulatorAccount,
    EmulatorConfig,
    KISEmulator,
)
from kis_emulator.wire import KST
from tests.support.emulator import Client, ManualClock, kis_error, running_emulator


def _claims(token: str) -> dict[str, Any]:
    def decode(part: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return data

    header, claims, signature = token.split(".")
    assert decode(header) == {"typ": "JWT", "alg": "HS512"}
    assert len(signature) == 86
    assert re.fullmatch(r"[A-Za-z0-9_-]+", signature)
    return decode(claims)


def test_token_success_shape_and_kst_expiry(emulator: KISEmulator, vts: Client) -> None:
    """200 with access_token, Bearer, int expires_in and a naive KST expiry 24 h after issuance."""
    before = emulator.now()
    response = vts.token_request()
    after = emulator.now()
    assert response.status == 200
    body = response.json()
    assert set(body) == {"access_token", "access_token_token_expired", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    expiry = datetime.strptime(body["access_token_token_expired"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST)
    # The string is truncated to whole seconds.
    assert before + timedelta(hours=24) - timedelta(seconds=1) <= expiry <= after + timedelta(hours=24)


def test_token_is_a_kis_shaped_jwt_with_jti_appkey(emulator: KISEmulator, vts: Client) -> None:
    claims = _claims(vts.token())
    assert claims["jti"] == DEMO_VTS_ACCOUNT.app_key
    assert claims["sub"] == "token"
    assert claims["iss"] == "unogw"
    assert claims["prdt_cd"] == ""
    uuid.UUID(claims["aud"])
    assert claims["exp"] - claims["iat"] == 86400
    assert abs(claims["iat"] - emulator.now().timestamp()) < 5


def test_same_token_within_six_hours_new_one_after(emulator: KISEmulator, vts: Client) -> None:
    first = vts.token_request().json()
    emulator.advance(5 * 3600 + 59 * 60)
    again = vts.token_request().json()
    assert again["access_token"] == first["access_token"]
    assert again["access_token_token_expired"] == first["access_token_token_expired"]
    assert 86400 - (5 * 3600 + 59 * 60) - 2 <= again["expires_in"] <= 86400 - (5 * 3600 + 59 * 60)
    emulator.advance(61)
    fresh = vts.token_request().json()
    assert fresh["access_token"] != first["access_token"]
    assert fresh["expires_in"] == 86400
    counters = emulator.counters()
    assert counters["tokens_issued"] == 2
    assert counters["token_requests"] == 3


def test_one_token_request_per_minute(emulator: KISEmulator, vts: Client) -> None:
    """EGW00133 with 403 within 60 s; a refused request does not restart the window."""
    vts.token()
    emulator.advance(30)
    refused = vts.token_request()
    assert refused.status == 403
    assert refused.json() == {
        "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
        "error_code": "EGW00133",
    }
    emulator.advance(30.5)
    assert vts.token_request().status == 200
    assert emulator.counters()["errors_by_code"] == {"EGW00133": 1}


def test_rate_window_is_per_app_key(http: urllib3.PoolManager) -> None:
    other = EmulatorAccount("VTS", "PS" + "x" * 34, "s" * 180)
    with running_emulator("VTS", accounts=[DEMO_VTS_ACCOUNT, other]) as emu:
        assert Client(http, emu.base_url, DEMO_VTS_ACCOUNT).token_request().status == 200
        assert Client(http, emu.base_url, other).token_request().status == 200


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"grant_type": None}, "EGW00115"),
        ({"grant_type": "password"}, "EGW00112"),
        ({"appkey": None}, "EGW00102"),
        ({"appkey": ""}, "EGW00102"),
        ({"appkey": "PS" + "0" * 34}, "EGW00103"),
        ({"appsecret": None}, "EGW00104"),
        ({"appsecret": "wrong"}, "EGW00105"),
        ({"appsecret": DEMO_VTS_ACCOUNT.app_secret + "\n"}, "EGW00105"),
    ],
)
def test_token_endpoint_errors(vts: Client, overrides: dict[str, Any], code: str) -> None:
    response = vts.token_request(**overrides)
    assert response.status == 403
    body = response.json()
    assert list(body) == ["error_description", "error_code"]
    assert body["error_code"] == code


def test_token_body_not_json_or_not_object_is_egw00101(vts: Client) -> None:
    for raw in (b"grant_type=client_credentials", b"[1, 2]", b"\xff\xfe"):
        response = vts.http.request(
            "POST", vts.base_url + "/oauth2/tokenP", body=raw, headers={"content-type": "application/json"}
        )
        assert (response.status, kis_error(response)) == (403, "EGW00101")


def test_token_wrong_content_type_is_egw00132(vts: Client) -> None:
    body = json.dumps({"grant_type": "client_credentials"}).encode()
    response = vts.http.request(
        "POST", vts.base_url + "/oauth2/tokenP", body=body, headers={"content-type": "text/plain"}
    )
    assert (response.status, kis_error(response)) == (403, "EGW00132")


def test_vts_key_on_real_host_is_egw02004(real_emulator: KISEmulator, http: urllib3.PoolManager) -> None:
    client = Client(http, real_emulator.base_url, DEMO_VTS_ACCOUNT)
    for response in (client.token_request(), client.price("whatever"), client.revoke("x")):
        assert response.status == 500
        assert response.json() == {
            "rt_cd": "1",
            "msg1": "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다.",
            "msg_cd": "EGW02004",
        }


def test_real_key_on_vts_host_is_egw02004(emulator: KISEmulator, http: urllib3.PoolManager) -> None:
    client = Client(http, emulator.base_url, DEMO_REAL_ACCOUNT)
    for response in (client.token_request(), client.price("whatever")):
        assert response.status == 500
        assert response.json()["msg_cd"] == "EGW02004"
        assert response.json()["msg1"] == "모의투자 도메인은 실전투자 앱키로 호출하실 수 없습니다."


def test_revoke_then_call_is_egw00121(vts: Client) -> None:
    token = vts.token()
    assert vts.price(token).status == 200
    response = vts.revoke(token)
    assert response.status == 200
    assert response.json() == {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}
    refused = vts.price(token)
    assert refused.status == 500
    assert refused.json() == {"rt_cd": "1", "msg1": "유효하지 않은 token 입니다.", "msg_cd": "EGW00121"}


def test_revoke_then_token_request_mints_a_new_token(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    vts.revoke(token)
    emulator.advance(61)  # the 1-per-minute rule still holds after a revoke
    fresh = vts.token()
    assert fresh != token
    assert vts.price(fresh).status == 200


def test_revoke_unknown_or_twice_is_egw00121(vts: Client) -> None:
    token = vts.token()
    assert vts.revoke(token).status == 200
    for bad in (token, "not-a-token"):
        response = vts.revoke(bad)
        assert response.status == 403
        assert response.json() == {
            "error_description": "유효하지 않은 token 입니다.",
            "error_code": "EGW00121",
        }


def test_revoke_with_bad_credentials_uses_token_endpoint_errors(vts: Client) -> None:
    token = vts.token()
    assert kis_error(vts.revoke(token, appsecret="nope")) == "EGW00105"
    assert kis_error(vts.revoke(token, appkey="PS" + "1" * 34)) == "EGW00103"
    assert vts.price(token).status == 200  # still valid


def test_expired_token_is_egw00123_with_status_500_then_200(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.advance(24 * 3600)
    expired = vts.price(token)
    assert expired.status == 500
    assert expired.json() == {"rt_cd": "1", "msg1": "기간이 만료된 token 입니다.", "msg_cd": "EGW00123"}
    emulator.set_config(token_error_status=200)
    assert (vts.price(token).status, kis_error(vts.price(token))) == (200, "EGW00123")
    assert (vts.price("garbage").status, kis_error(vts.price("garbage"))) == (200, "EGW00121")


def test_expired_token_is_not_reused_by_token_request(emulator: KISEmulator, vts: Client) -> None:
    emulator.set_config(token_reuse_window=timedelta(days=2))
    token = vts.token()
    emulator.advance(24 * 3600)
    assert vts.token() != token


def test_old_token_stays_valid_unless_configured(emulator: KISEmulator, vts: Client) -> None:
    first = vts.token()
    emulator.advance(6 * 3600 + 1)
    second = vts.token()
    assert second != first
    assert vts.price(first).status == 200
    emulator.set_config(new_token_revokes_previous=True)
    emulator.advance(6 * 3600 + 1)
    third = vts.token()
    assert kis_error(vts.price(first)) == "EGW00121"
    assert kis_error(vts.price(second)) == "EGW00121"
    assert vts.price(third).status == 200


def test_shrunk_times_by_config(http: urllib3.PoolManager) -> None:
    config = replace(EmulatorConfig(), token_lifetime=10, token_reuse_window=2, token_request_interval=1)
    with running_emulator("VTS", config=config, clock=ManualClock()) as emu:
        client = Client(http, emu.base_url, DEMO_VTS_ACCOUNT)
        body = client.token_request().json()
        assert body["expires_in"] == 10
        emu.advance(1)
        assert client.token_request().json()["access_token"] == body["access_token"]
        emu.advance(1)
        assert client.token_request().json()["access_token"] != body["access_token"]


def test_token_of_another_app_key_is_invalid(http: urllib3.PoolManager) -> None:
    other = EmulatorAccount("VTS", "PS" + "y" * 34, "t" * 180)
    with running_emulator("VTS", accounts=[DEMO_VTS_ACCOUNT, other], max_rps=None) as emu:
        mine = Client(http, emu.base_url, DEMO_VTS_ACCOUNT)
        theirs = Client(http, emu.base_url, other)
        assert kis_error(theirs.price(mine.token())) == "EGW00121"


def test_approval_key(vts: Client) -> None:
    body = {
        "grant_type": "client_credentials",
        "appkey": vts.account.app_key,
        "secretkey": vts.account.app_secret,
    }
    response = vts.post("/oauth2/Approval", body)
    assert response.status == 200
    uuid.UUID(response.json()["approval_key"])
    wrong = vts.post("/oauth2/Approval", {**body, "secretkey": "x"})
    assert (wrong.status, kis_error(wrong)) == (403, "EGW00105")
    missing = vts.post("/oauth2/Approval", {k: v for k, v in body.items() if k != "secretkey"})
    assert kis_error(missing) == "EGW00104"


def test_hashkey_echoes_body_with_sha256(vts: Client) -> None:
    order = {"CANO": "50012345", "ACNT_PRDT_CD": "01", "PDNO": "005930", "ORD_QTY": "1"}
    headers = {"appkey": vts.account.app_key, "appsecret": vts.account.app_secret}
    response = vts.post("/uapi/hashkey", order, headers=headers)
    assert response.status == 200
    body = response.json()
    assert body["BODY"] == order
    canonical = json.dumps(order, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert body["HASH"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", body["HASH"])
    bad = vts.post("/uapi/hashkey", order, headers={**headers, "appsecret": "no"})
    assert (bad.status, kis_error(bad)) == (500, "EGW00105")
