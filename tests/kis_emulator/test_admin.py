"""The admin API over HTTP and in Python: time, counters, faults, void, reset, config, clocks."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import urllib3

from kis_emulator import (
    DEMO_REAL_ACCOUNT,
    DEMO_VTS_ACCOUNT,
    ClockNotAdvanceableError,
    EmulatorAccount,
    EmulatorNotRunningError,
    KISEmulator,
    ShiftableClock,
    default_accounts,
)
from tests.support.emulator import Client, FrozenClock, ManualClock, kis_error, running_emulator
from tests.support.kis import PRICE_PATH


def test_admin_now_and_advance(emulator: KISEmulator, vts: Client) -> None:
    before = datetime.fromisoformat(vts.admin("GET", "now").json()["now"])
    response = vts.admin("POST", "advance", {"seconds": 3600})
    assert response.status == 200
    after = datetime.fromisoformat(response.json()["now"])
    assert timedelta(hours=1) <= after - before < timedelta(hours=1, seconds=5)
    assert emulator.now() >= after
    assert vts.admin("POST", "advance", {"seconds": "soon"}).status == 400
    assert vts.admin("POST", "advance", {"seconds": -1}).status == 400


def test_admin_counters(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    vts.token_request()  # EGW00133
    vts.price(token)
    vts.price("bad")
    counters = vts.admin("GET", "counters").json()
    assert counters == {
        "requests_by_endpoint": {"/oauth2/tokenP": 2, PRICE_PATH: 2},
        "errors_by_code": {"EGW00133": 1, "EGW00121": 1},
        "tokens_issued": 1,
        "token_requests": 2,
        "orders_attempted": 0,
        "calls_ok": 1,
        "faults_applied": 0,
    }
    assert counters == emulator.counters()


def test_admin_orders(vts: Client) -> None:
    vts.http.request(
        "POST", vts.base_url + "/uapi/domestic-stock/v1/trading/order-cash", json={"PDNO": "005930"}
    )
    orders = vts.admin("GET", "orders").json()["orders"]
    assert [order["path"] for order in orders] == ["/uapi/domestic-stock/v1/trading/order-cash"]


def test_admin_faults(vts: Client) -> None:
    response = vts.admin(
        "POST", "faults", {"kind": "error_code", "count": 2, "path": PRICE_PATH, "msg_cd": "EGW00002"}
    )
    assert response.status == 200
    assert response.json()["pending"] == [
        {"kind": "error_code", "remaining": 2, "path": PRICE_PATH, "params": {"msg_cd": "EGW00002"}}
    ]
    token = vts.token()
    assert kis_error(vts.price(token)) == "EGW00002"
    assert vts.admin("GET", "faults").json()["pending"][0]["remaining"] == 1
    assert vts.admin("POST", "faults", {"kind": "nope"}).status == 400
    assert vts.admin("POST", "faults", {"count": 1}).status == 400


def test_void_tokens(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    response = vts.admin("POST", "void-tokens")
    assert response.json() == {"voided": 1}
    assert kis_error(vts.price(token)) == "EGW00121"
    emulator.advance(61)
    fresh = vts.token()  # within 6 h, yet a fresh token
    assert fresh != token
    assert vts.price(fresh).status == 200
    assert emulator.void_tokens() == 1


def test_reset(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.inject_fault("html_502", count=5)
    assert vts.admin("POST", "reset").json() == {"reset": True}
    assert emulator.pending_faults() == []
    assert emulator.counters()["tokens_issued"] == 0
    assert emulator.counters()["requests_by_endpoint"] == {}
    assert kis_error(vts.price(token)) == "EGW00121"  # tokens forgotten
    assert vts.token_request().status == 200  # and the 1-minute window too


def test_admin_config(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    emulator.advance(86400)
    response = vts.admin("POST", "config", {"token_error_status": 200, "max_rps": 5})
    assert response.status == 200
    assert response.json()["token_error_status"] == 200
    assert response.json()["max_rps"] == 5
    assert response.json()["token_lifetime"] == 86400
    assert vts.price(token).status == 200
    assert emulator.config.max_rps == 5
    assert vts.admin("POST", "config", {"max_rps": None}).json()["max_rps"] is None
    assert vts.admin("POST", "config", {"max_rps": 0}).status == 400
    assert vts.admin("POST", "config", {"holdings": []}).status == 400
    assert vts.admin("GET", "config").json()["holdings"] == 5


def test_admin_unknown_path_and_method(vts: Client) -> None:
    assert vts.admin("GET", "nothing").status == 404
    assert vts.admin("GET", "reset").status == 405
    assert vts.admin("POST", "advance", [1]).status == 400


def test_admin_requests_are_not_counted(emulator: KISEmulator, vts: Client) -> None:
    vts.admin("GET", "now")
    vts.admin("GET", "counters")
    assert emulator.counters()["requests_by_endpoint"] == {}


def test_clock_without_advance_is_refused(http: urllib3.PoolManager) -> None:
    with running_emulator("VTS", clock=FrozenClock()) as emu:
        with pytest.raises(ClockNotAdvanceableError):
            emu.advance(1)
        assert isinstance(ClockNotAdvanceableError(), TypeError)
        response = http.request("POST", emu.base_url + "/__emulator__/advance", json={"seconds": 1})
        assert response.status == 409
        assert "advance" in response.json()["error"]


def test_fully_manual_clock(http: urllib3.PoolManager) -> None:
    """With a hand-driven clock every timing rule is exact."""
    clock = ManualClock()
    with running_emulator("VTS", clock=clock) as emu:
        client = Client(http, emu.base_url, DEMO_VTS_ACCOUNT)
        body = client.token_request().json()
        assert body["access_token_token_expired"] == "2026-03-03 09:00:00"  # 00:00 UTC + 24 h, in KST
        token = body["access_token"]
        assert [client.price(token).status for _ in range(3)] == [200, 200, 500]  # frozen time: 2/s
        clock.advance(0.999)
        assert client.price(token).status == 500
        clock.advance(0.001)
        assert client.price(token).status == 200
        clock.advance(58.9)
        assert kis_error(client.token_request()) == "EGW00133"
        emu.advance(0.1)
        assert emu.now() == datetime(2026, 3, 2, 0, 1, tzinfo=UTC)
        assert client.token_request().json()["expires_in"] == 86400 - 60
        clock.advance(86400 - 60)
        assert kis_error(client.price(token)) == "EGW00123"


def test_shiftable_clock() -> None:
    clock = ShiftableClock()
    start = clock.now()
    assert start.tzinfo is UTC
    clock.advance(7200)
    assert clock.now() - start >= timedelta(hours=2)
    assert clock.offset == timedelta(hours=2)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_naive_clock_is_rejected() -> None:
    class NaiveClock:
        def now(self) -> datetime:
            return datetime(2026, 1, 1)  # deliberately naive

    emu = KISEmulator("VTS", clock=NaiveClock())
    with pytest.raises(ValueError, match="naive"):
        emu.now()


def test_lifecycle(http: urllib3.PoolManager) -> None:
    emu = KISEmulator("real")
    assert emu.mode == "REAL"
    with pytest.raises(EmulatorNotRunningError):
        _ = emu.base_url
    url = emu.start()
    assert url.startswith("http://127.0.0.1:")
    assert emu.base_url == url
    with pytest.raises(RuntimeError):
        emu.start()
    client = Client(http, url, DEMO_REAL_ACCOUNT)
    assert client.token_request().status == 200  # keep-alive connection open in the pool
    emu.stop()
    emu.stop()
    assert not emu.running
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.token_request()
    emu.start()  # restartable; state survives
    client.base_url = emu.base_url
    assert kis_error(client.token_request()) == "EGW00133"
    emu.stop()


def test_stop_returns_promptly_with_idle_keep_alive_connections(http: urllib3.PoolManager) -> None:
    emu = KISEmulator("VTS")
    emu.start()
    Client(http, emu.base_url, DEMO_VTS_ACCOUNT).token_request()
    stopper = threading.Thread(target=emu.stop, daemon=True)
    stopper.start()
    stopper.join(2.0)
    assert not stopper.is_alive()


def test_accounts_and_modes() -> None:
    assert default_accounts() == (DEMO_VTS_ACCOUNT, DEMO_REAL_ACCOUNT)
    for account in default_accounts():
        assert len(account.app_key) == 36
        assert account.app_key.startswith("PS")
        assert account.app_key.isalnum()
        assert len(account.app_secret) == 180
        assert account.app_secret not in repr(account)
    assert EmulatorAccount("vts", "PSk", "s").mode == "VTS"
    with pytest.raises(ValueError, match="mode"):
        EmulatorAccount("paper", "PSk", "s")
    with pytest.raises(ValueError, match="mode"):
        KISEmulator("prod")
    with pytest.raises(ValueError, match="twice"):
        KISEmulator("VTS", accounts=[DEMO_VTS_ACCOUNT, DEMO_VTS_ACCOUNT])


def test_import_has_no_side_effects() -> None:
    """Importing the package starts no thread and reads no environment or clock."""
    code = (
        "import threading, os\n"
        "os.environ.clear()\n"
        "before = threading.active_count()\n"
        "import kis_emulator as e\n"
        "assert threading.active_count() == before\n"
        "assert e.KISEmulator\n"
    )
    env = {"PYTHONPATH": ":".join(p for p in sys.path if p)}
    argv = [sys.executable, "-c", code]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    assert result.returncode == 0, result.stderr
