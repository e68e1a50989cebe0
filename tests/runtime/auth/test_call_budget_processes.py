"""Real processes share one key's budget (file: one host, no server; Redis: any host), and the
budget degrades instead of stopping: Redis stopped mid-run, a corrupt state reset with a warning."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runtime.auth.call_budget.fallback import LOCAL_SHARE, FallbackCallBudget
from runtime.auth.call_budget.file import FileCallBudget
from runtime.auth.call_budget.gcra import BudgetPolicy
from runtime.auth.call_budget.redis import RedisCallBudget
from runtime.bootstrap import build_call_budget
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.masking import fingerprint
from runtime.settings import StoreKind, TokenStoreSpec
from tests.support.redis import redis_server

SCOPE = BrokerScope(Mode.REAL, fingerprint("PSreal-key-shared"))
CLOCK = SystemClock()

# argv: store spec, limit, seconds, go file, out file. Books as fast as the budget lets it.
CHILD = textwrap.dedent(
    """
    import json, pathlib, sys, time
    from runtime.bootstrap import build_call_budget
    from runtime.broker.base import BrokerScope, Mode
    from runtime.clock import SystemClock
    from runtime.config import parse_store_spec
    from runtime.deadline import Deadline
    from runtime.masking import fingerprint
    spec, limit, seconds = parse_store_spec(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    go, out = pathlib.Path(sys.argv[4]), pathlib.Path(sys.argv[5])
    clock = SystemClock()
    budget = build_call_budget(spec, limit, clock=clock)
    scope = BrokerScope(Mode.REAL, fingerprint("PSreal-key-shared"))
    while not go.exists():
        time.sleep(0.002)
    end, starts = time.monotonic() + seconds, []
    while time.monotonic() < end:
        booking = budget.acquire(scope, Deadline.after(clock, 20))
        starts.append(time.monotonic())
        budget.release(scope, booking)
    out.write_text(json.dumps(starts))
    """
)


def _run_children(spec: str, n: int, limit: float, seconds: float, work: Path) -> list[list[float]]:
    go = work / "go"
    outs = [work / f"out-{i}.json" for i in range(n)]
    children = [
        subprocess.Popen(  # noqa: S603 - this interpreter and our own script
            [sys.executable, "-c", CHILD, spec, str(limit), str(seconds), str(go), str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    time.sleep(1.0)  # imports done on a busy machine; late starters only lose a little time
    go.touch()
    for child in children:
        _out, err = child.communicate(timeout=seconds + 60)
        assert child.returncode == 0, err
    return [json.loads(out.read_text()) for out in outs]


def _busiest_window(starts: list[float]) -> int:
    ordered = sorted(starts)
    return max(sum(1 for t in ordered[i:] if t - s < 1.0) for i, s in enumerate(ordered))


@pytest.mark.slow
@pytest.mark.parametrize("store", ["file", "redis"])
def test_four_processes_on_one_key_share_its_limit_fairly(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec = f"file:{tmp_path / 'qts'}" if store == "file" else request.getfixturevalue("redis_url")
    limit, seconds = 20.0, 4.0
    per_process = _run_children(spec, 4, limit, seconds, tmp_path)
    counts = [len(starts) for starts in per_process]
    merged = [t for starts in per_process for t in starts]
    fair = sum(counts) / len(counts)
    assert min(counts) >= 0.5 * fair, counts
    assert _busiest_window(merged) <= limit + 1  # +1: a sleep may overshoot into the next window
    assert sum(counts) >= 0.85 * limit * seconds, counts


def _degraded(budget: FallbackCallBudget) -> bool:
    return budget.degraded  # a call, so that the type checker does not narrow the property


def test_redis_stopped_mid_run_degrades_to_a_local_share_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server(tmp_path) as url:
        budget = build_call_budget(TokenStoreSpec(StoreKind.REDIS, url), 20.0, clock=CLOCK)
        assert isinstance(budget, FallbackCallBudget)
        for _ in range(3):
            budget.acquire(SCOPE, Deadline.after(CLOCK, 5))
        assert not _degraded(budget)
    # The server is gone now; calls go on at a quarter of the limit.
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    for _ in range(11):
        budget.acquire(SCOPE, Deadline.after(CLOCK, 5))
    elapsed = time.monotonic() - started
    assert _degraded(budget)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "out of reach" in warnings[0].getMessage()
    local_interval = BudgetPolicy(20.0 * LOCAL_SHARE).interval
    assert elapsed >= 10 * local_interval - 0.05


def test_a_corrupt_file_budget_is_reset_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = FileCallBudget(tmp_path, CLOCK, 20.0)
    budget.acquire(SCOPE, Deadline.after(CLOCK, 5))
    budget.path_for(SCOPE).write_bytes(b'{"v": 1, "tat": "soon"')
    caplog.set_level(logging.WARNING)
    assert budget.acquire(SCOPE, Deadline.after(CLOCK, 5)).wait_s == 0.0
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    usage = budget.usage(SCOPE)
    assert usage is not None
    assert usage.limit_per_s == 20.0


def test_a_file_budget_from_before_a_reboot_is_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = FileCallBudget(tmp_path, CLOCK, 20.0)
    far = time.monotonic() + 100_000
    budget.path_for(SCOPE).parent.mkdir(parents=True, exist_ok=True)
    budget.path_for(SCOPE).write_text(
        json.dumps(
            {"v": 1, "tat": far, "starts": [], "sent": [], "done": [], "slow_until": 0, "limit_per_s": 20}
        )
    )
    caplog.set_level(logging.WARNING)
    assert budget.acquire(SCOPE, Deadline.after(CLOCK, 5)).wait_s == 0.0
    assert any("implausibly" in r.getMessage() for r in caplog.records)


def test_a_corrupt_redis_budget_is_reset_with_a_warning(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    budget = RedisCallBudget.from_url(redis_url, CLOCK, 20.0, prefix="corrupt")
    budget.acquire(SCOPE, Deadline.after(CLOCK, 5))
    client = redis.Redis.from_url(redis_url)
    client.set(f"corrupt:budget:REAL:{SCOPE.key_fingerprint}", b"\x00not json")
    caplog.set_level(logging.WARNING)
    assert budget.acquire(SCOPE, Deadline.after(CLOCK, 5)).wait_s == 0.0
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1
    assert budget.acquire(SCOPE, Deadline.after(CLOCK, 5)).wait_s > 0  # booked normally again


def test_calls_go_on_when_redis_stops_under_a_running_runtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kis_emulator import KISEmulator, demo_account
    from runtime.bootstrap import build_runtime
    from runtime.broker.base import AppCredentials
    from runtime.settings import Settings

    account = demo_account("REAL")
    with KISEmulator("REAL") as emulator:  # KIS's REAL limit: 20/s per key
        with redis_server(tmp_path) as url:
            settings = Settings(
                mode=Mode.REAL,
                credentials=AppCredentials(account.app_key, account.app_secret),
                base_url=emulator.base_url,
                token_store=TokenStoreSpec(StoreKind.REDIS, url),
            )
            kis = build_runtime(settings)
            for _ in range(5):
                kis.call(
                    "GET",
                    "/uapi/domestic-stock/v1/quotations/inquire-price",
                    tr_id="FHKST01010100",
                    params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
                )
        caplog.set_level(logging.WARNING)
        with kis:
            for _ in range(10):  # Redis is gone: the token is in memory, the budget goes local
                kis.call(
                    "GET",
                    "/uapi/domestic-stock/v1/quotations/inquire-price",
                    tr_id="FHKST01010100",
                    params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
                )
        counters = emulator.counters()
    assert counters["calls_ok"] == 15
    assert counters["errors_by_code"].get("EGW00201", 0) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "out of reach" in warnings[0]
