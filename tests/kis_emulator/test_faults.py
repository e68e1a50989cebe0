"""Every fault kind, as a urllib3 client with retries disabled sees it."""

from __future__ import annotations

import json
import time

import pytest
import urllib3

from kis_emulator import KISEmulator
from tests.support.emulator import Client, kis_error
from tests.support.kis import PRICE_PATH


def test_html_502(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("html_502")
    response = vts.token_request()
    assert response.status == 502
    assert response.headers["content-type"].startswith("text/html")
    assert b"502 Bad Gateway" in response.data
    assert vts.token_request().status == 200  # count=1: the next request is normal


def test_malformed_json(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.inject_fault("malformed_json", path=PRICE_PATH)
    response = vts.price(token)
    assert response.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.data)
    emulator.inject_fault("malformed_json", path="/oauth2/tokenP")
    with pytest.raises(json.JSONDecodeError):
        json.loads(vts.token_request().data)


def test_missing_fields(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("missing_fields", path="/oauth2/tokenP")
    token_body = vts.token_request().json()
    assert "access_token" not in token_body
    emulator.inject_fault("missing_fields", path=PRICE_PATH)
    call_body = vts.price(vts.token()).json()
    assert "rt_cd" not in call_body
    assert "output" not in call_body


def test_faulted_token_request_mints_nothing(emulator: KISEmulator, vts: Client) -> None:
    """A replaced answer means the request was never processed: no token, no 1-minute window."""
    emulator.inject_fault("missing_fields", path="/oauth2/tokenP")
    vts.token_request()
    assert vts.token_request().status == 200
    assert emulator.counters()["tokens_issued"] == 1


def test_slow(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.inject_fault("slow", seconds=0.3)
    started = time.perf_counter()
    response = vts.price(token)
    elapsed = time.perf_counter() - started
    assert response.status == 200
    assert response.json()["rt_cd"] == "0"  # answered normally, just late
    assert 0.3 <= elapsed < 5.0  # late by the fault, with room for a busy 2-core machine


def test_slow_triggers_a_client_read_timeout(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("slow", seconds=0.3)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        vts.http.request("GET", vts.base_url + PRICE_PATH, timeout=urllib3.Timeout(read=0.05))


def test_reset_surfaces_as_a_connection_error(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.inject_fault("reset", path=PRICE_PATH)
    with pytest.raises(urllib3.exceptions.ProtocolError, match=r"(?i)reset|aborted|broken"):
        vts.price(token)
    assert vts.price(token).status == 200  # the pool reconnects


def test_error_code(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.inject_fault("error_code", path=PRICE_PATH, status=500, msg_cd="EGW00001", msg1="일시적 오류")
    response = vts.price(token)
    assert response.status == 500
    assert response.json() == {"rt_cd": "1", "msg1": "일시적 오류", "msg_cd": "EGW00001"}
    emulator.inject_fault("error_code", path="/oauth2/tokenP", msg_cd="EGW00002")
    token_response = vts.token_request()
    assert token_response.status == 200
    assert set(token_response.json()) == {"error_description", "error_code"}
    assert kis_error(token_response) == "EGW00002"
    assert emulator.counters()["errors_by_code"] == {"EGW00001": 1, "EGW00002": 1}


def test_empty_body(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("empty_body")
    response = vts.token_request()
    assert response.status == 200
    assert response.headers["content-length"] == "0"
    assert response.data == b""


def test_non_utf8(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("non_utf8")
    response = vts.token_request()
    assert response.status == 200
    with pytest.raises(UnicodeDecodeError):
        response.data.decode("utf-8")


def test_huge_body(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.inject_fault("huge_body")
    response = vts.price(token)
    assert response.status == 200
    assert len(response.data) >= 2 * 1024 * 1024
    assert response.json()["rt_cd"] == "0"


def test_fault_count_and_path_prefix(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("html_502", count=2, path="/uapi/")
    token = vts.token()  # /oauth2 does not match
    assert [vts.price(token).status for _ in range(3)] == [502, 502, 200]
    assert emulator.pending_faults() == []
    assert emulator.counters()["faults_applied"] == 2


def test_admin_paths_never_receive_faults(emulator: KISEmulator, vts: Client) -> None:
    emulator.inject_fault("html_502")
    assert vts.admin("GET", "counters").status == 200
    assert vts.token_request().status == 502


def test_unknown_fault_kind_is_rejected(emulator: KISEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.inject_fault("explode")
    with pytest.raises(ValueError, match="count"):
        emulator.inject_fault("html_502", count=0)
    with pytest.raises(ValueError, match="msg_cd"):
        emulator.inject_fault("error_code")
