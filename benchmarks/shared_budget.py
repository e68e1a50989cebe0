"""One app key, many processes: the shared call budget against the emulator's per-key limit.

Each cell starts N processes on one key (``_budget_child.py``), every one calling inquire-price as
fast as its runtime lets it for ``--seconds``, against a KIS emulator that enforces KIS's limit
per app key (REAL 20/s, VTS 2/s; a sliding one-second window, EGW00201 above it). Cells: N = 1,
2, 4, 8 x the file store (one host, no server) and Redis x REAL and VTS, plus two "hosts"
(separate cache folders and HOMEs, two processes each) sharing only Redis.

Per cell: calls/s and its share of the limit, EGW00201 counted by the emulator (and as a share
of the requests it saw), errors that reached callers, calls per process (min/max, and the
smallest as a share of the fair share), p50/p99 of the budget wait per call.

Targets (issue #12): >= 95% of the key's limit, EGW00201 <= 1% of requests, 0 errors reaching
callers, every process >= 50% of its fair share; one process alone: 0 EGW00201.

    python benchmarks/shared_budget.py                 # every cell, 20 s each (about 8 minutes)
    python benchmarks/shared_budget.py --seconds 10
    python benchmarks/shared_budget.py --quick         # smoke: one 2 s cell of 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, Measured, redis_server, report, target
from kis_emulator import EmulatorConfig, KISEmulator, demo_account

CHILD = BENCH_DIR / "_budget_child.py"
LIMITS = {"REAL": 20, "VTS": 2}


def _flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()  # a fresh budget, token and ledger for every cell


def _env(emulator: KISEmulator, mode: str, store: str, home: Path) -> dict[str, str]:
    account = demo_account(mode)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "KIS_MODE": mode,
        f"KIS_{mode}_BASE_URL": emulator.base_url,
        f"KIS_{mode}_APP_KEY": account.app_key,
        f"KIS_{mode}_APP_SECRET": account.app_secret,
        "QTS_TOKEN_STORE": store,
        # A snapshot of the source under test, when the run was started with one.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }


def _run_cell(
    envs: Sequence[dict[str, str]], seconds: float, work: Path
) -> tuple[float, list[dict[str, Any]]]:
    """One child per environment, released together; when they were released, and what each wrote."""
    go = work / "go"
    ready = [work / f"ready-{i}" for i in range(len(envs))]
    outs = [work / f"out-{i}.json" for i in range(len(envs))]
    children = [
        subprocess.Popen(  # noqa: S603 - our interpreter running our own script
            [sys.executable, str(CHILD), str(seconds), str(r), str(go), str(o)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env, r, o in zip(envs, ready, outs, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        if time.monotonic() > deadline or any(c.poll() is not None for c in children):
            for child in children:
                child.kill()
            errors = [c.communicate()[1][-1500:] for c in children]
            raise RuntimeError(f"the children did not get ready: {errors}")
        time.sleep(0.01)
    time.sleep(1.1)  # the tokenP and warm-up calls of the emulator's window have passed
    released = time.monotonic()
    temp = work / "go.tmp"
    temp.write_text(repr(released))
    temp.replace(go)
    for child in children:
        _out, err = child.communicate(timeout=seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"a child failed (exit {child.returncode}): {err[-1500:]}")
    return released, [json.loads(o.read_text()) for o in outs]


def _cell(
    emulator: KISEmulator, mode: str, store: str, hosts: int, per_host: int, seconds: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qts-bench-budget-") as tmp:
        work = Path(tmp)
        envs = [
            _env(emulator, mode, store, work / f"host-{h}") for h in range(hosts) for _ in range(per_host)
        ]
        before = emulator.counters()
        released, results = _run_cell(envs, seconds, work)
        after = emulator.counters()
    limited = after["errors_by_code"].get("EGW00201", 0) - before["errors_by_code"].get("EGW00201", 0)
    ok_at_emulator = after["calls_ok"] - before["calls_ok"]
    # Answers that came back within the cell's time: a call booked before the end but answered
    # after it is not counted (it would flatter the rate by the length of the queue).
    calls = [sum(1 for t in r["returned"] if released <= t <= released + seconds) for r in results]
    waits = [w for r in results for w in r["waits"]]
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r["errors"].items():
            errors[name] = errors.get(name, 0) + count
    limit = LIMITS[mode]
    rate = sum(calls) / seconds
    fair = sum(calls) / len(calls)
    return {
        "mode": mode,
        "processes": len(envs),
        "hosts": hosts,
        "calls_per_s": round(rate, 2),
        "share_of_limit": round(rate / limit, 3),
        "egw00201_at_emulator": limited,
        "egw00201_share": round(limited / max(limited + ok_at_emulator, 1), 4),
        "errors_reaching_callers": sum(errors.values()),
        "errors_by_type": errors,
        "calls_per_process_min": min(calls),
        "calls_per_process_max": max(calls),
        "min_share_of_fair": round(min(calls) / fair, 3) if fair else 0.0,
        "wait_p50_ms": round(statistics.median(waits) * 1000, 1) if waits else None,
        "wait_p99_ms": round(_p99(waits) * 1000, 1) if waits else None,
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _meets(cell: dict[str, Any]) -> bool:
    return (
        cell["share_of_limit"] >= 0.95
        and cell["egw00201_share"] <= 0.01
        and cell["errors_reaching_callers"] == 0
        and cell["min_share_of_fair"] >= 0.5
        and (cell["processes"] > 1 or cell["egw00201_at_emulator"] == 0)
    )


def measure(quick: bool, seconds: float) -> Measured:
    counts = (2,) if quick else (1, 2, 4, 8)
    modes = ("REAL",) if quick else ("REAL", "VTS")
    cells: dict[str, dict[str, Any]] = {}
    with redis_server() as redis_url:
        stores = {"file": "file"} if quick or redis_url is None else {"file": "file", "redis": redis_url}
        for mode in modes:
            config = EmulatorConfig(token_request_interval=0)  # a fresh store per cell asks again
            with KISEmulator(mode, config=config) as emulator:
                for store_name, store in stores.items():
                    for n in counts:
                        if store_name == "redis":
                            _flush(store)
                        cells[f"{mode}_{store_name}_{n}"] = _cell(emulator, mode, store, 1, n, seconds)
                if redis_url is not None and not quick:
                    _flush(redis_url)
                    cells[f"{mode}_redis_2hosts_x2"] = _cell(emulator, mode, redis_url, 2, 2, seconds)
    targets = {
        name: target(
            ">= 95% of the limit, EGW00201 <= 1%, 0 caller errors, each process >= 50% of fair share",
            cell["share_of_limit"],
            _meets(cell),
        )
        for name, cell in cells.items()
    }
    notes = [
        f"{seconds:g} s per cell; children are separate processes on one machine "
        f"({os.cpu_count()} CPUs, shared with other work), the emulator runs in the benchmark process.",
        "calls_per_s counts answers that reached callers; the emulator enforces REAL 20/s and VTS 2/s "
        "per app key with a sliding one-second window.",
    ]
    if redis_url is None:
        notes.append("redis-server is not installed: the Redis cells were skipped")
    return Measured({"cells": cells}, targets, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: one 2 s cell; targets not judged")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each cell (default 20)")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else args.seconds
    measured = measure(args.quick, seconds)
    report(
        Path(__file__).stem,
        quick=args.quick,
        figures=measured.figures,
        targets=measured.targets,
        notes=measured.notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
