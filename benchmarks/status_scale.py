"""``qts status`` over 1,000 stored scopes, against the same with 1 scope, file store and Redis.

Each store is filled through the real path (``build_runtime``, one inquire-price per key against
the emulator, so each key has its token, its issuance ledger and its call-budget state): once
with a single key, once with 1,000 keys. File store: two folders. Redis: two databases of one
throwaway ``redis-server`` (skipped when it is not installed). ``qts status`` then runs as fresh
child processes on each, interleaved (one, many, one, many, ...).

Targets (issue #16): median(1,000 scopes) / median(1 scope) <= 2, for each store.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    Measured,
    compile_package,
    distribution,
    emulator_process,
    ns_to_ms,
    redis_server,
    run_script,
    target,
    time_child_ns,
)
from _emulator_server import bench_account
from runtime import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.settings import Settings, StoreKind, TokenStoreSpec

RATIO_TARGET = 2.0
PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
QUERY = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}


def _fill(base_url: str, spec: TokenStoreSpec, first: int, count: int) -> None:
    for i in range(first, first + count):
        account = bench_account("VTS", i)
        settings = Settings(
            mode=Mode.VTS,
            credentials=AppCredentials(account.app_key, account.app_secret),
            base_url=base_url,
            token_store=spec,
        )
        with build_runtime(settings) as kis:  # tokenP, then one booked call: token, ledger, budget
            kis.call("GET", PRICE, tr_id="FHKST01010100", params=QUERY)


def _qts() -> list[str]:
    script = Path(sys.executable).parent / "qts"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "runtime.cli"]


def _time_status(store: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "QTS_"))}
    env["QTS_TOKEN_STORE"] = store
    return time_child_ns([*_qts(), "status"], env, kill_after_s=120)


def _cell(one: str, many: str, runs: int) -> tuple[list[int], list[int]]:
    """Interleaved ``qts status`` wall times on the 1-scope store and the many-scope store."""
    _time_status(one)
    _time_status(many)  # warm the OS file cache (and sweep any leftover lock file)
    ones: list[int] = []
    lots: list[int] = []
    for _ in range(runs):
        ones.append(_time_status(one))
        lots.append(_time_status(many))
    return ones, lots


def _figures(prefix: str, many: int, ones: list[int], lots: list[int]) -> tuple[dict[str, Any], float]:
    ratio = statistics.median(lots) / statistics.median(ones)
    figures = {
        f"{prefix}status_1_scope_ms": distribution(ns_to_ms(ones)),
        f"{prefix}status_{many}_scopes_ms": distribution(ns_to_ms(lots)),
        f"{prefix}ratio": round(ratio, 3),
    }
    return figures, ratio


def _kinds(folder: str) -> dict[str, int]:
    """How many files of each kind (``json``, ``budget.json``, ``lock``, ...) the folder holds."""
    kinds = [path.name.split(".", 1)[1] for path in Path(folder).iterdir()]
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}


def run(quick: bool) -> Measured:
    compile_package()  # timed children start as an installed copy would
    many = 50 if quick else 1000
    runs = 3 if quick else 9
    figures: dict[str, Any] = {"scopes": many}
    ratios: dict[str, float] = {}
    notes = ["Fresh `qts status` processes, interleaved; each key made one call (token, ledger, budget)."]
    with tempfile.TemporaryDirectory() as tmp, emulator_process("VTS", keys=many + 1) as base_url:
        one_folder, many_folder = f"{tmp}/one", f"{tmp}/many"  # the file store's cell
        _fill(base_url, TokenStoreSpec(StoreKind.FILE, one_folder), 1, 1)
        _fill(base_url, TokenStoreSpec(StoreKind.FILE, many_folder), 2, many)
        ones, lots = _cell(f"file:{one_folder}", f"file:{many_folder}", runs)
        cell, ratios["status_many_vs_one"] = _figures("", many, ones, lots)
        figures.update(cell)
        figures["files_in_folder"] = _kinds(many_folder)
        with redis_server() as url:
            if url is None:
                notes.append("redis-server is not installed: no Redis cell.")
            else:
                one_url, many_url = url.removesuffix("/0") + "/1", url.removesuffix("/0") + "/2"
                _fill(base_url, TokenStoreSpec(StoreKind.REDIS, one_url), 1, 1)
                _fill(base_url, TokenStoreSpec(StoreKind.REDIS, many_url), 2, many)
                ones, lots = _cell(one_url, many_url, runs)
                cell, ratios["status_many_vs_one_redis"] = _figures("redis_", many, ones, lots)
                figures.update(cell)
    goal = f"median({many} scopes) / median(1 scope) <= {RATIO_TARGET}"
    targets = {name: target(goal, ratio, ratio <= RATIO_TARGET) for name, ratio in ratios.items()}
    return Measured(figures, targets, notes=notes)


def main(argv: list[str] | None = None) -> int:
    return run_script(__file__, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
