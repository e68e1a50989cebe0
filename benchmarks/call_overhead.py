"""Call overhead: ``KISRuntime.call`` versus a raw urllib3 GET to the same emulator endpoint.

A = an authenticated ``inquire-price`` GET through the whole runtime (token cache, pacer,
request validation, adapter, transport, JSON decode and envelope check).
B = ``PoolManager.request("GET", ...)`` with the same fixed headers (token included) and the
same query, reading the whole body and decoding it with ``json.loads``. Both sides use a PoolManager built by
``runtime.bootstrap.build_http`` (same pool settings, keep-alive), talk to the same emulator
(a child process, no call limit) and are interleaved A B A B so drift hits both alike.

Targets: median(A) / median(B) <= 1.05, and each side opens exactly one connection.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import urllib3

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
RATIO_TARGET = 1.05  # issue #16: within 5% of raw urllib3 + json.loads


def _connections(http: urllib3.PoolManager) -> int:
    """Connections the PoolManager's pools have opened so far (urllib3 counts them per pool)."""
    total = 0
    for key in list(http.pools.keys()):
        pool: Any = http.pools[key]
        total += int(pool.num_connections)
    return total


def run(quick: bool) -> Measured:
    calls = 200 if quick else 3000
    warmup = 50 if quick else 300
    account = demo_account("VTS")
    clock = SystemClock()
    with emulator_process("VTS") as base_url:
        runtime_http = build_http()
        raw_http = build_http()
        adapter = KISBrokerAdapter(
            Mode.VTS,
            AppCredentials(account.app_key, account.app_secret),
            runtime_http,
            base_url=base_url,
            clock=clock,
        )
        cache = TokenCache(adapter, InMemoryTokenStore(), clock)
        # Pacing off (1e9/s): this measures the layer's cost, not KIS's per-second limit.
        kis = KISRuntime(adapter, cache, clock, call_budget=InProcessCallBudget(clock, 1e9))
        token = kis.access_token()
        headers = {
            "content-type": "application/json; charset=utf-8",
            "accept": "application/json",
            "appkey": account.app_key,
            "appsecret": account.app_secret,
            "custtype": "P",
            "user-agent": "qts-runtime",
            "authorization": token.authorization,
            "tr_id": TR_ID,
            "tr_cont": "",
        }
        url = base_url + PATH
        timeout = urllib3.Timeout(connect=5.0, read=20.0)
        no_retry = urllib3.Retry(total=0, redirect=0)

        def runtime_call() -> None:
            response = kis.call("GET", PATH, tr_id=TR_ID, params=PARAMS)
            assert response.body["rt_cd"] == "0"

        def raw_call() -> None:
            response = raw_http.request(
                "GET", url, headers=headers, fields=PARAMS, timeout=timeout, retries=no_retry
            )
            assert response.status == 200
            assert json.loads(response.data)["rt_cd"] == "0"

        for _ in range(warmup):
            runtime_call()
            raw_call()
        runtime_ns: list[int] = []
        raw_ns: list[int] = []
        started = perf_ns()
        for _ in range(calls):
            t0 = perf_ns()
            runtime_call()
            t1 = perf_ns()
            raw_call()
            t2 = perf_ns()
            runtime_ns.append(t1 - t0)
            raw_ns.append(t2 - t1)
        elapsed_s = (perf_ns() - started) / 1e9
        runtime_conns = _connections(runtime_http)
        raw_conns = _connections(raw_http)
        kis.close()
        raw_http.clear()

    a = distribution(ns_to_us(runtime_ns))
    b = distribution(ns_to_us(raw_ns))
    ratio = a["median"] / b["median"]
    pair_ratios = distribution([x / y for x, y in zip(runtime_ns, raw_ns, strict=True)])
    figures = {
        "runtime_call_us": a,
        "raw_urllib3_get_us": b,
        "median_ratio": round(ratio, 4),
        "per_pair_ratio": pair_ratios,
        "overhead_us_median": round(a["median"] - b["median"], 3),
        "calls_each": calls,
        "pairs_per_second": round(calls / elapsed_s, 1),
        "connections_opened": {"runtime": runtime_conns, "raw": raw_conns},
    }
    targets = {
        "median_ratio": target(
            f"median(runtime) / median(raw) <= {RATIO_TARGET}", ratio, ratio <= RATIO_TARGET
        ),
        "connection_reuse": target(
            "the runtime opens exactly 1 connection for all its calls (keep-alive)",
            runtime_conns,
            runtime_conns == 1,
        ),
    }
    return Measured(
        figures,
        targets,
        notes=[
            "A and B interleaved A B A B in one run against one emulator child process (no call limit).",
            "Call budget set to 1e9/s; both PoolManagers from runtime.bootstrap.build_http.",
        ],
    )


if __name__ == "__main__":
    sys.exit(run_script(__file__, __doc__, run))
