"""Another runtime in a warm process, and what 100 runtimes (100 keys) cost in memory.

In one process that has already built a runtime and made a call (everything imported, the
emulator connection known), each round takes a key never used before and times, interleaved:

- A: ``build_runtime(settings)`` (memory store) + the first ``inquire-price`` (its tokenP
  included) + ``close()``;
- B: a new ``urllib3.PoolManager()`` + tokenP + the GET, ``json.loads`` of each answer.

Then 100 more runtimes on 100 new keys are built and each makes its first call; tracemalloc
measures what they hold while all are alive (divided by 100).

The emulator runs in another process with tokenP unlimited and the extra keys registered.
Targets (issue #16): median(A) / median(B) <= 1.5; <= 100 KiB per runtime.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import tracemalloc
from typing import Any

import urllib3

from _common import Measured, distribution, emulator_process, ns_to_ms, perf_ns, run_script, target
from _emulator_server import bench_account
from kis_emulator import demo_account
from runtime import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.settings import Settings

RATIO_TARGET = 1.5
KIB_TARGET = 100.0
PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"
TR_ID = "FHKST01010100"
PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}


def _settings(base_url: str, key: str, secret: str) -> Settings:
    return Settings(mode=Mode.VTS, credentials=AppCredentials(key, secret), base_url=base_url)


def _qts_round(base_url: str, key: str, secret: str) -> Any:
    with build_runtime(_settings(base_url, key, secret)) as kis:
        return kis.call("GET", PATH, tr_id=TR_ID, params=PARAMS)


def _raw_round(base_url: str, key: str, secret: str) -> Any:
    http = urllib3.PoolManager()
    reply = http.request(
        "POST",
        base_url + "/oauth2/tokenP",
        headers={"content-type": "application/json"},
        body=json.dumps({"grant_type": "client_credentials", "appkey": key, "appsecret": secret}),
    )
    token = json.loads(reply.data)["access_token"]
    reply = http.request(
        "GET",
        base_url + PATH,
        fields=PARAMS,
        headers={
            "authorization": "Bearer " + token,
            "appkey": key,
            "appsecret": secret,
            "tr_id": TR_ID,
            "custtype": "P",
        },
    )
    answer = json.loads(reply.data)
    http.clear()
    return answer


def _memory_per_runtime(base_url: str, first: int, count: int) -> float:
    """KiB tracemalloc sees held by ``count`` live runtimes, each after its first call."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    alive = []
    for i in range(first, first + count):
        account = bench_account("VTS", i)
        kis = build_runtime(_settings(base_url, account.app_key, account.app_secret))
        kis.call("GET", PATH, tr_id=TR_ID, params=PARAMS)
        alive.append(kis)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    for kis in alive:
        kis.close()
    return held / count / 1024.0


def run(quick: bool) -> Measured:
    rounds = 10 if quick else 60
    many = 20 if quick else 100
    demo = demo_account("VTS")
    with emulator_process("VTS", keys=2 * rounds + many + 2) as base_url:
        # Warm the process: everything imported, one runtime built and used.
        _qts_round(base_url, demo.app_key, demo.app_secret)
        _raw_round(base_url, demo.app_key, demo.app_secret)
        qts: list[int] = []
        raw: list[int] = []
        for r in range(rounds):
            a, b = bench_account("VTS", 2 * r + 1), bench_account("VTS", 2 * r + 2)
            t0 = perf_ns()
            _qts_round(base_url, a.app_key, a.app_secret)
            t1 = perf_ns()
            _raw_round(base_url, b.app_key, b.app_secret)
            t2 = perf_ns()
            qts.append(t1 - t0)
            raw.append(t2 - t1)
        kib = _memory_per_runtime(base_url, 2 * rounds + 1, many)
    ratio = statistics.median(qts) / statistics.median(raw)
    figures: dict[str, Any] = {
        "second_runtime_build_token_get_ms": distribution(ns_to_ms(qts)),
        "raw_new_pool_token_get_ms": distribution(ns_to_ms(raw)),
        "second_runtime_vs_raw": round(ratio, 3),
        "runtimes_alive": many,
        "kib_per_runtime": round(kib, 1),
    }
    targets = {
        "second_runtime_vs_raw": target(f"median ratio <= {RATIO_TARGET}", ratio, ratio <= RATIO_TARGET),
        "kib_per_runtime": target(f"<= {KIB_TARGET:g} KiB per runtime (tracemalloc)", kib, kib <= KIB_TARGET),
    }
    return Measured(
        figures,
        targets,
        notes=[
            "Each round uses app keys never used before, so both sides pay a real tokenP.",
            f"kib_per_runtime: {many} runtimes alive at once, each after its first call, memory store.",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(__file__, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
