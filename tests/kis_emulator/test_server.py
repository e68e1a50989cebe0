"""The HTTP shell: body framing, concurrency, failure containment and the run_forever helper."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import urllib3

from kis_emulator import DEMO_VTS_ACCOUNT, KISEmulator, run_forever
from tests.support.emulator import Client, ManualClock, running_emulator


def test_chunked_request_body(vts: Client) -> None:
    def chunks() -> Iterator[bytes]:
        payload = json.dumps({"grant_type": "client_credentials", "appkey": vts.account.app_key}).encode()
        yield payload[:10]
        yield payload[10:-1] + b', "appsecret": ' + json.dumps(vts.account.app_secret).encode() + b"}"

    response = vts.http.request(
        "POST",
        vts.base_url + "/oauth2/tokenP",
        body=chunks(),
        chunked=True,
        headers={"content-type": "application/json"},
    )
    assert response.status == 200, response.data


def test_oversized_body_is_refused(vts: Client) -> None:
    response = vts.http.request(
        "POST",
        vts.base_url + "/uapi/hashkey",
        body=b"x",
        headers={"content-length": str(64 * 1024 * 1024), "content-type": "application/json"},
    )
    assert response.status == 413


def test_concurrent_clients(emulator: KISEmulator, vts: Client) -> None:
    token = vts.token()
    pool = urllib3.PoolManager(maxsize=8, retries=False)

    def call(_: int) -> int:
        return pool.request(
            "GET",
            vts.base_url + "/uapi/domestic-stock/v1/quotations/inquire-price",
            fields={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
            headers=vts.headers(token, "FHKST01010100"),
        ).status

    with ThreadPoolExecutor(8) as executor:
        statuses = list(executor.map(call, range(200)))
    pool.clear()
    assert statuses == [200] * 200
    assert emulator.counters()["calls_ok"] == 200


class _BrokenClock(ManualClock):
    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def now(self) -> datetime:
        if self.broken:
            return datetime(2026, 1, 1)  # deliberately naive: the emulator must reject it
        return super().now()


def test_internal_error_answers_500_instead_of_dropping(http: urllib3.PoolManager) -> None:
    clock = _BrokenClock()
    with running_emulator("VTS", clock=clock) as emu:
        client = Client(http, emu.base_url, DEMO_VTS_ACCOUNT)
        clock.broken = True
        response = client.token_request()
        assert response.status == 500
        assert "naive" in response.json()["emulator_error"]
        clock.broken = False
        assert client.token_request().status == 200
        assert emu.now().tzinfo is UTC


def test_run_forever_serves_until_stopped(http: urllib3.PoolManager) -> None:
    urls: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    server = threading.Thread(
        target=run_forever, kwargs={"mode": "VTS", "on_start": urls.put, "stop": stop}, daemon=True
    )
    server.start()
    url = urls.get(timeout=2)
    assert Client(http, url, DEMO_VTS_ACCOUNT).token_request().status == 200
    stop.set()
    server.join(2)
    assert not server.is_alive()
