"""Emulator headroom: how many requests per second the emulator itself serves.

The emulator runs in a child process (as in call_overhead.py), without a call limit. A light
client -- one pre-built HTTP/1.1 request written to a kept-alive socket, the answer read by
Content-Length, no urllib3 -- drives ``inquire-price`` from 1, 4 and 8 threads for a fixed
time each. In the same run, one thread sends ``KISRuntime.call`` for the same time.

If the emulator's saturated rate is well above the rate one runtime thread achieves, the call
figure measures the client side and the round trip, not a saturated server.

Target: emulator saturated req/s >= 2 x one runtime thread's calls/s.
"""

from __future__ import annotations

import socket
import sys
import threading
from urllib.parse import urlencode, urlsplit

from _common import Measured, distribution, emulator_process, ns_to_us, perf_ns, run_script, target
from kis_emulator import demo_account
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.session import KISRuntime
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.bootstrap import build_http
from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import SystemClock

PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"
TR_ID = "FHKST01010100"
PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
HEADROOM_TARGET = 2.0


def _request_bytes(host: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {PATH}?{urlencode(PARAMS)} HTTP/1.1", f"host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _drive(address: tuple[str, int], request: bytes, until_ns: int, latencies: list[int]) -> int:
    """Send ``request`` on one kept-alive connection until ``until_ns``; returns the count."""
    count = 0
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        while perf_ns() < until_ns:
            t0 = perf_ns()
            sock.sendall(request)
            status = reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"emulator answered {status!r}")
            length = 0
            while True:
                line = reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = reader.read(length)
            if len(body) != length:
                raise RuntimeError("short body")
            latencies.append(perf_ns() - t0)
            count += 1
        reader.close()
    return count


def _load(address: tuple[str, int], request: bytes, threads: int, seconds: float) -> tuple[float, list[int]]:
    counts = [0] * threads
    latencies: list[list[int]] = [[] for _ in range(threads)]
    start = perf_ns()
    until = start + int(seconds * 1e9)

    def worker(i: int) -> None:
        counts[i] = _drive(address, request, until, latencies[i])

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 30)
    elapsed = (perf_ns() - start) / 1e9
    return sum(counts) / elapsed, [x for xs in latencies for x in xs]


def run(quick: bool) -> Measured:
    seconds = 0.3 if quick else 3.0
    account = demo_account("VTS")
    clock = SystemClock()
    with emulator_process("VTS") as base_url:
        http = build_http()
        adapter = KISBrokerAdapter(
            Mode.VTS,
            AppCredentials(account.app_key, account.app_secret),
            http,
            base_url=base_url,
            clock=clock,
        )
        kis = KISRuntime(
            adapter,
            TokenCache(adapter, InMemoryTokenStore(), clock),
            clock,
            call_budget=InProcessCallBudget(clock, 1e9),
        )
        token = kis.access_token()
        split = urlsplit(base_url)
        address = (split.hostname or "127.0.0.1", split.port or 80)
        request = _request_bytes(
            split.netloc,
            {
                "content-type": "application/json; charset=utf-8",
                "accept": "application/json",
                "appkey": account.app_key,
                "appsecret": account.app_secret,
                "custtype": "P",
                "authorization": token.authorization,
                "tr_id": TR_ID,
                "tr_cont": "",
            },
        )
        _load(address, request, 1, seconds / 5)  # warm-up
        rates: dict[str, float] = {}
        single_latency: list[int] = []
        for threads in (1, 4, 8):
            rate, latencies = _load(address, request, threads, seconds)
            rates[f"{threads}_clients"] = round(rate, 1)
            if threads == 1:
                single_latency = latencies

        calls = 0
        until = perf_ns() + int(seconds * 1e9)
        t0 = perf_ns()
        while perf_ns() < until:
            kis.call("GET", PATH, tr_id=TR_ID, params=PARAMS)
            calls += 1
        runtime_rate = calls / ((perf_ns() - t0) / 1e9)
        kis.close()

    saturated = max(rates.values())
    headroom = saturated / runtime_rate
    figures = {
        "emulator_req_per_s": rates,
        "emulator_saturated_req_per_s": round(saturated, 1),
        "light_client_round_trip_us": distribution(ns_to_us(single_latency)),
        "runtime_one_thread_calls_per_s": round(runtime_rate, 1),
        "headroom": round(headroom, 3),
        "seconds_per_level": seconds,
    }
    targets = {
        "headroom": target(
            f"emulator saturated req/s >= {HEADROOM_TARGET} x one runtime thread's calls/s",
            headroom,
            headroom >= HEADROOM_TARGET,
        )
    }
    return Measured(
        figures,
        targets,
        notes=["Emulator in a child process, max_rps=None; light raw-socket client with keep-alive."],
    )


if __name__ == "__main__":
    sys.exit(run_script(__file__, __doc__, run))
