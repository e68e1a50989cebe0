"""Real-time stream figures: events/s one session sustains, drop -> next event, Approvals per day.

- ``session_events_per_s``: one RealtimeSession (frame parser, typed events, subscriber queue)
  reading 005930 trades from an emulator child that pushes frames as fast as the socket takes
  them; the baseline is a bare ``websockets`` client counting records on the same server in the
  same run (``raw_events_per_s``).
- ``drop_to_next_event_ms``: the emulator cuts the socket (admin API); time until the next event
  reaches the subscriber (reconnect after a jittered pause under 1 s, re-subscribe, first frame).
  A fresh session per sample, so every drop is a first one for the breaker.
- ``approval_calls_per_day``: ApprovalKeyCache on a FakeClock over simulated days, a process
  restart every hour and a key asked every 5 minutes, on a shared file store.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import urllib3
from websockets.sync.client import connect

from _common import REPO, Measured, distribution, run_script, target
from kis_emulator import demo_account
from runtime.auth.approval_cache import ApprovalKeyCache
from runtime.auth.reconnect import Breaker
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.stream import RealtimeSession
from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.broker.kis.stream import KISRealtimeConnector
from runtime.broker.realtime import TRADE_TR, Registration
from runtime.clock import FakeClock, SystemClock

sys.path.insert(0, str(REPO))
from tests.support.fakes import FakeBroker

SAMSUNG = Registration(TRADE_TR, "005930")
# A child emulator pushing frames with no pause; it stops when its stdin closes.
_CHILD = textwrap.dedent(
    """
    import sys
    from kis_emulator import EmulatorConfig, KISEmulator
    with KISEmulator("VTS", config=EmulatorConfig(max_rps=None, ws_tick_interval=0.0)) as emulator:
        print(emulator.base_url, emulator.ws_url, flush=True)
        sys.stdin.read()
    """
)


@contextmanager
def emulator_child() -> Iterator[tuple[str, str]]:
    child = subprocess.Popen(  # noqa: S603 - our interpreter running our own snippet
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        base_url, ws_url = child.stdout.readline().split()
        yield base_url, ws_url
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def session_for(base_url: str, ws_url: str, http: urllib3.PoolManager) -> RealtimeSession:
    account = demo_account("VTS")
    clock = SystemClock()
    adapter = KISBrokerAdapter(
        Mode.VTS, AppCredentials(account.app_key, account.app_secret), http, base_url=base_url, clock=clock
    )
    store = InMemoryTokenStore()
    return RealtimeSession(
        KISRealtimeConnector(adapter.scope, ws_url),
        ApprovalKeyCache(adapter, store, clock),
        store,
        clock,
        breaker=Breaker(),
    )


def session_rate(base_url: str, ws_url: str, http: urllib3.PoolManager, seconds: float) -> float:
    with session_for(base_url, ws_url, http) as session:
        subscription = session.subscribe([SAMSUNG])
        subscription.get(timeout_s=10)  # connected and flowing
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            if subscription.get(timeout_s=1) is not None:
                count += 1
        return count / elapsed


def raw_rate(base_url: str, ws_url: str, seconds: float) -> float:
    account = demo_account("VTS")
    reply = urllib3.request(
        "POST",
        base_url + "/oauth2/Approval",
        json={"grant_type": "client_credentials", "appkey": account.app_key, "secretkey": account.app_secret},
    )
    key = reply.json()["approval_key"]
    subscribe = {
        "header": {"approval_key": key, "custtype": "P", "tr_type": "1", "content-type": "utf-8"},
        "body": {"input": {"tr_id": TRADE_TR, "tr_key": "005930"}},
    }
    with connect(ws_url, ping_interval=None, compression=None) as ws:
        ws.send(json.dumps(subscribe))
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            frame = ws.recv(timeout=5)
            if isinstance(frame, str) and frame[:1] == "0":
                count += int(frame.split("|", 3)[2])
            elif isinstance(frame, str) and "PINGPONG" in frame:
                ws.send(frame)
        return count / elapsed


def drop_to_next_event_ms(base_url: str, ws_url: str, http: urllib3.PoolManager) -> float:
    with session_for(base_url, ws_url, http) as session:
        subscription = session.subscribe([SAMSUNG])
        subscription.get(timeout_s=10)
        connects = session.stats.connects
        started = time.perf_counter()
        urllib3.request("POST", base_url + "/__emulator__/stream/drop")
        while True:
            event = subscription.get(timeout_s=10)
            if event is None:
                raise RuntimeError("no event within 10 s of a drop")
            if session.stats.connects > connects:
                return (time.perf_counter() - started) * 1000


def approvals_per_day(days: int) -> tuple[float, int]:
    clock = FakeClock()
    broker = FakeBroker(clock)
    asked = 0
    with tempfile.TemporaryDirectory() as folder:
        store = FileTokenStore(Path(folder) / "qts")
        cache = ApprovalKeyCache(broker, store, clock)
        for minute in range(0, days * 24 * 60, 5):
            if minute % 60 == 0:
                cache = ApprovalKeyCache(broker, store, clock)  # a process restart
            cache.get()
            asked += 1
            clock.advance(300)
    return len(broker.approvals) / days, asked


def measure(quick: bool) -> Measured:
    logging.getLogger("runtime").addHandler(logging.NullHandler())  # the staged drops' warnings
    seconds = 1.0 if quick else 5.0
    drops = 3 if quick else 15
    http = urllib3.PoolManager()
    with emulator_child() as (base_url, ws_url):
        raw = raw_rate(base_url, ws_url, seconds)
        rate = session_rate(base_url, ws_url, http, seconds)
        recoveries = [drop_to_next_event_ms(base_url, ws_url, http) for _ in range(drops)]
    http.clear()
    days = 3 if quick else 7
    per_day, asked = approvals_per_day(days)
    allowed = 1.01 + 1 / days  # one renewal every 23 h 50 min, plus the first issuance
    recovery = distribution(recoveries)
    return Measured(
        figures={
            "session_events_per_s": round(rate),
            "raw_events_per_s": round(raw),
            "session_vs_raw": round(rate / raw, 3),
            "drop_to_next_event_ms": recovery,
            "approval_calls_per_day": round(per_day, 3),
            "approval_keys_asked_per_day": asked // days,
            "soak_days": days,
        },
        targets={
            "throughput": target(
                "one session delivers >= 50% of a bare client's events/s", rate / raw, rate >= 0.5 * raw
            ),
            "recovery": target("drop -> next event p90 under 2 s", recovery["p90"], recovery["p90"] < 2000),
            "approvals": target(
                "Approval calls per simulated day <= 1.01 + 1/days (renewal every 23h50m + the first)",
                per_day,
                per_day <= allowed,
            ),
        },
        notes=[
            "emulator in a child process pushing frames with no pause (every 5th trade frame has 2 records)",
            "drop: POST /__emulator__/stream/drop; a fresh session per sample",
            "soak: simulated days, restart every hour, a key asked every 5 minutes, shared file store",
        ],
    )


if __name__ == "__main__":
    sys.exit(run_script(__file__, __doc__, measure))
