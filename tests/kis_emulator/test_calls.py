"""Ordinary /uapi calls over real HTTP: quotes, balance paging, tr_id rules, limits and orders."""

from __future__ import annotations

import re

import pytest
import urllib3

from kis_emulator import (
    DEMO_ACNT_PRDT_CD,
    DEMO_CANO,
    DEMO_VTS_ACCOUNT,
    EmulatorConfig,
    KISEmulator,
    synthetic_holdings,
)
from tests.support.emulator import BALANCE_TR, Client, kis_error
from tests.support.kis import BALANCE_PATH, PRICE_PATH, PRICE_TR_ID

PRICE_FIELDS = (
    *("stck_prpr", "prdy_vrss", "prdy_vrss_sign", "prdy_ctrt", "acml_vol", "acml_tr_pbmn", "stck_oprc"),
    *(
        "stck_hgpr",
        "stck_lwpr",
        "stck_mxpr",
        "stck_llam",
        "stck_sdpr",
        "stck_shrn_iscd",
        "rprs_mrkt_kor_name",
    ),
    *("iscd_stat_cls_code", "per", "pbr", "eps", "bps", "hts_avls"),
)
ACCOUNT = {"CANO": DEMO_CANO, "ACNT_PRDT_CD": DEMO_ACNT_PRDT_CD, "AFHR_FLPR_YN": "N", "INQR_DVSN": "02"}


def test_inquire_price_fields_and_headers(vts: Client) -> None:
    response = vts.price(vts.token())
    assert response.status == 200
    assert response.headers["content-type"] == "application/json; charset=UTF-8"
    assert response.headers["tr_id"] == PRICE_TR_ID
    assert response.headers["tr_cont"] == "D"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", response.headers["gt_uid"])
    body = response.json()
    assert (body["rt_cd"], body["msg_cd"], body["msg1"]) == ("0", "MCA00000", "정상처리 되었습니다!")
    output = body["output"]
    assert set(PRICE_FIELDS) <= set(output)
    assert all(isinstance(value, str) for value in output.values())
    assert output["stck_shrn_iscd"] == "005930"
    price = {
        name: int(output[name]) for name in ("stck_prpr", "stck_oprc", "stck_hgpr", "stck_lwpr", "stck_sdpr")
    }
    assert price["stck_lwpr"] <= min(price["stck_oprc"], price["stck_prpr"])
    assert max(price["stck_oprc"], price["stck_prpr"]) <= price["stck_hgpr"]
    assert int(output["prdy_vrss"]) == price["stck_prpr"] - price["stck_sdpr"]


def test_inquire_price_is_deterministic_and_accepts_lowercase_names(vts: Client) -> None:
    token = vts.token()
    upper = vts.price(token).json()["output"]
    lower = vts.price(token, {"fid_cond_mrkt_div_code": "J", "fid_input_iscd": "005930"}).json()["output"]
    assert upper == lower
    etn = vts.price(token, {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "Q500001"})
    assert etn.json()["output"]["stck_shrn_iscd"] == "Q500001"


@pytest.mark.parametrize("code", ["00593", "ABCDEF", "0059301", "000000", ""])
def test_inquire_price_bad_code(vts: Client, code: str) -> None:
    response = vts.price(vts.token(), {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code})
    assert response.status == 200
    assert response.json()["rt_cd"] == "1"
    assert response.json()["msg_cd"] in {"OPSQ0002", "OPSQ2001"}


def test_inquire_price_unknown_code_message(vts: Client) -> None:
    response = vts.price(vts.token(), {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "12345X"})
    assert response.json() == {"rt_cd": "1", "msg1": "없는 종목코드입니다.", "msg_cd": "OPSQ0002"}


def test_balance_single_page(vts: Client) -> None:
    response = vts.call(BALANCE_PATH, vts.token(), BALANCE_TR["VTS"], ACCOUNT)
    assert response.status == 200
    assert response.headers["tr_cont"] == "D"
    body = response.json()
    assert (body["rt_cd"], body["msg_cd"], body["msg1"]) == ("0", "KIOK0510", "조회가 완료되었습니다")
    assert len(body["output1"]) == 5
    row = body["output1"][0]
    for name in (
        "pdno",
        "prdt_name",
        "hldg_qty",
        "ord_psbl_qty",
        "pchs_avg_pric",
        "pchs_amt",
        "prpr",
        "evlu_amt",
    ):
        assert isinstance(row[name], str)
    assert int(row["evlu_amt"]) == int(row["hldg_qty"]) * int(row["prpr"])
    (summary,) = body["output2"]
    assert int(summary["evlu_amt_smtl_amt"]) == sum(int(r["evlu_amt"]) for r in body["output1"])
    assert int(summary["tot_evlu_amt"]) == int(summary["dnca_tot_amt"]) + int(summary["evlu_amt_smtl_amt"])
    assert {"ctx_area_fk100", "ctx_area_nk100"} <= set(body)


def _all_pages(client: Client, token: str, tr_id: str) -> list[tuple[str, int]]:
    pages: list[tuple[str, int]] = []
    query = dict(ACCOUNT)
    extra: dict[str, str] = {}
    while True:
        response = client.call(BALANCE_PATH, token, tr_id, query, **extra)
        assert response.json()["rt_cd"] == "0", response.json()
        pages.append((response.headers["tr_cont"], len(response.json()["output1"])))
        if response.headers["tr_cont"] == "D":
            return pages
        query["CTX_AREA_NK100"] = response.json()["ctx_area_nk100"]
        query["CTX_AREA_FK100"] = response.json()["ctx_area_fk100"]
        extra = {"tr_cont": "N"}


def test_balance_paging_vts_20_rows(emulator: KISEmulator, vts: Client) -> None:
    emulator.set_config(holdings=synthetic_holdings(45))
    assert _all_pages(vts, vts.token(), "VTTC8434R") == [("M", 20), ("M", 20), ("D", 5)]


def test_balance_paging_real_50_rows(real_emulator: KISEmulator, real: Client) -> None:
    real_emulator.set_config(holdings=synthetic_holdings(75), max_rps=None)
    assert _all_pages(real, real.token(), "TTTC8434R") == [("M", 50), ("D", 25)]


def test_balance_continuation_without_key_is_refused(emulator: KISEmulator, vts: Client) -> None:
    emulator.set_config(holdings=synthetic_holdings(45))
    response = vts.call(BALANCE_PATH, vts.token(), "VTTC8434R", ACCOUNT, tr_cont="N")
    assert (response.status, kis_error(response)) == (200, "OPSQ2001")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"ACNT_PRDT_CD": "01"}, "CANO"),
        ({"CANO": "1234", "ACNT_PRDT_CD": "01"}, "CANO"),
        ({"CANO": "50012345"}, "ACNT_PRDT_CD"),
    ],
)
def test_balance_requires_account_fields(vts: Client, query: dict[str, str], field: str) -> None:
    response = vts.call(BALANCE_PATH, vts.token(), "VTTC8434R", query)
    assert response.status == 200
    assert response.json() == {
        "rt_cd": "1",
        "msg1": f"ERROR : INPUT_FIELD_NAME {field}",
        "msg_cd": "OPSQ2001",
    }


def test_vts_refuses_real_tr_id(vts: Client) -> None:
    response = vts.call(BALANCE_PATH, vts.token(), "TTTC8434R", ACCOUNT)
    assert response.status == 500
    assert response.json() == {"rt_cd": "1", "msg1": "모의투자 TR 이 아닙니다.", "msg_cd": "EGW00213"}
    assert response.headers["tr_id"] == "TTTC8434R"


def test_real_refuses_vts_tr_id(real: Client) -> None:
    response = real.call(BALANCE_PATH, real.token(), "VTTC8434R", ACCOUNT)
    assert response.status == 500
    assert response.json()["msg1"] == "실전투자 TR 이 아닙니다."


@pytest.mark.parametrize("tr_id", ["FHKST01010100", "XYZ", ""])
def test_unknown_tr_id_for_path(vts: Client, tr_id: str) -> None:
    response = vts.call(BALANCE_PATH, vts.token(), tr_id, ACCOUNT)
    assert (response.status, kis_error(response)) == (500, "EGW00213")


def test_call_key_errors_use_rt_cd_shape(vts: Client) -> None:
    token = vts.token()
    cases = {"EGW00103": {"appkey": "PS" + "9" * 34}, "EGW00105": {"appsecret": "x"}}
    for code, header in cases.items():
        response = vts.call(PRICE_PATH, token, PRICE_TR_ID, None, **header)
        assert response.status == 500
        assert list(response.json()) == ["rt_cd", "msg1", "msg_cd"]
        assert kis_error(response) == code


def test_missing_or_malformed_authorization_is_egw00121(vts: Client) -> None:
    token = vts.token()
    assert kis_error(vts.price(None)) == "EGW00121"
    response = vts.call(PRICE_PATH, None, PRICE_TR_ID, None, authorization=token)  # no "Bearer"
    assert (response.status, kis_error(response)) == (500, "EGW00121")
    assert vts.call(PRICE_PATH, None, PRICE_TR_ID, None, authorization=f"bearer {token}").status == 200


def test_header_names_are_case_insensitive(vts: Client) -> None:
    token = vts.token()
    headers = {
        "Authorization": f"Bearer {token}",
        "AppKey": vts.account.app_key,
        "APPSECRET": vts.account.app_secret,
        "TR_ID": PRICE_TR_ID,
    }
    response = vts.http.request(
        "GET",
        vts.base_url + PRICE_PATH,
        fields={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "000660"},
        headers=headers,
    )
    assert response.status == 200, response.data


def test_per_second_limit_vts(manual_vts: tuple[KISEmulator, Client]) -> None:
    """VTS admits 2 calls in any one-second window; the third is EGW00201 without Retry-After."""
    emulator, vts = manual_vts
    token = vts.token()
    assert [vts.price(token).status for _ in range(2)] == [200, 200]
    refused = vts.price(token)
    assert refused.status == 500
    assert refused.json() == {"rt_cd": "1", "msg1": "초당 거래건수를 초과하였습니다.", "msg_cd": "EGW00201"}
    assert "retry-after" not in refused.headers
    emulator.advance(1)
    assert vts.price(token).status == 200
    assert emulator.counters()["errors_by_code"] == {"EGW00201": 1}


def test_per_second_limit_is_checked_before_the_token(manual_vts: tuple[KISEmulator, Client]) -> None:
    emulator, vts = manual_vts
    emulator.set_config(max_rps=1)
    assert kis_error(vts.price("bad")) == "EGW00121"
    assert kis_error(vts.price("bad")) == "EGW00201"


def test_real_default_limit_is_20(manual_real: tuple[KISEmulator, Client]) -> None:
    _, real = manual_real
    token = real.token()
    statuses = [real.price(token).status for _ in range(21)]
    assert statuses[:20] == [200] * 20
    assert statuses[20] == 500


@pytest.mark.parametrize(
    ("method", "path", "tr_id"),
    [
        ("POST", "/uapi/domestic-stock/v1/trading/order-cash", "VTTC0012U"),
        ("POST", "/uapi/domestic-stock/v1/trading/order-credit", "VTTC0052U"),
        ("POST", "/uapi/domestic-stock/v1/trading/order-rvsecncl", "VTTC0013U"),
        ("GET", "/uapi/domestic-stock/v1/trading/order-resv", ""),
        ("DELETE", "/uapi/overseas-stock/v1/trading/order", "VTTT1002U"),
    ],
)
def test_orders_are_recorded_and_refused(
    emulator: KISEmulator, vts: Client, method: str, path: str, tr_id: str
) -> None:
    response = vts.call(path, None, tr_id, None, method=method)  # no token: refused before any check
    assert response.status == 500
    assert response.json() == {
        "rt_cd": "1",
        "msg1": "emulator refuses all orders (Phase 2 sends none)",
        "msg_cd": "EMU00001",
    }
    (order,) = emulator.orders()
    assert (order["path"], order["method"], order["tr_id"]) == (path, method, tr_id)
    assert "time" in order
    assert DEMO_VTS_ACCOUNT.app_secret not in repr(emulator.orders())
    assert emulator.counters()["orders_attempted"] == 1


def test_orders_are_counted_even_when_rate_limited_or_keyless(emulator: KISEmulator, vts: Client) -> None:
    emulator.set_config(max_rps=1)
    for _ in range(3):
        response = vts.http.request(
            "POST", vts.base_url + "/uapi/domestic-stock/v1/trading/order-cash", json={}
        )
        assert kis_error(response) == "EMU00001"
    assert emulator.counters()["orders_attempted"] == 3


def test_unknown_path_is_404_and_wrong_method_405(vts: Client) -> None:
    response = vts.call("/uapi/domestic-stock/v1/quotations/nothing", vts.token(), PRICE_TR_ID)
    assert response.status == 404
    assert response.json()["rt_cd"] == "1"
    assert kis_error(response) == "EGW00101"
    assert vts.http.request("GET", vts.base_url + "/nowhere").status == 404
    assert vts.call(PRICE_PATH, None, PRICE_TR_ID, method="POST").status == 405
    assert vts.http.request("GET", vts.base_url + "/oauth2/tokenP").status == 405


def test_keep_alive_serves_many_calls_on_one_connection(vts: Client) -> None:
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", int(vts.base_url.rsplit(":", 1)[1]), maxsize=1, retries=False
    )
    headers = vts.headers(vts.token(), PRICE_TR_ID)
    for _ in range(50):
        response = pool.request(
            "GET",
            PRICE_PATH,
            fields={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
            headers=headers,
        )
        assert response.status == 200
    assert pool.num_connections == 1
    pool.close()


def test_default_config_uses_mode_limits() -> None:
    config = EmulatorConfig()
    assert (config.rps_for("REAL"), config.rps_for("VTS")) == (20, 2)
    assert (config.page_size_for("REAL"), config.page_size_for("VTS")) == (50, 20)
    assert EmulatorConfig(max_rps=None).rps_for("REAL") is None
