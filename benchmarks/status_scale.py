"""``qts status`` over a file store holding 1,000 scopes, against the same with 1 scope.

Two folders are filled through the real path (``build_runtime`` with the file store, one
tokenP per key against the emulator): one with a single key's token, one with 1,000 keys'
tokens (each with its call-budget file after one call). ``qts status`` then runs as fresh
child processes on each folder, interleaved.

Target (issue #16): median(1,000 scopes) / median(1 scope) <= 2.
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
    distribution,
    emulator_process,
    ns_to_ms,
    run_script,
    target,
    time_child_ns,
)
from _emulator_server import bench_account
from runtime import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.settings import Settings, StoreKind, TokenStoreSpec

RATIO_TARGET = 2.0


def _fill(base_url: str, folder: str, first: int, count: int) -> None:
    spec = TokenStoreSpec(StoreKind.FILE, folder)
    for i in range(first, first + count):
        account = bench_account("VTS", i)
        settings = Settings(
            mode=Mode.VTS,
            credentials=AppCredentials(account.app_key, account.app_secret),
            base_url=base_url,
            token_store=spec,
        )
        with build_runtime(settings) as kis:
            kis.access_token()


def _qts() -> list[str]:
    script = Path(sys.executable).parent / "qts"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "runtime.cli"]


def _time_status(folder: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "QTS_"))}
    env["QTS_TOKEN_STORE"] = f"file:{folder}"
    return time_child_ns([*_qts(), "status"], env, kill_after_s=120)


def run(quick: bool) -> Measured:
    many = 50 if quick else 1000
    runs = 3 if quick else 9
    with tempfile.TemporaryDirectory() as tmp, emulator_process("VTS", keys=many + 1) as base_url:
        one_folder, many_folder = f"{tmp}/one", f"{tmp}/many"
        _fill(base_url, one_folder, 1, 1)
        _fill(base_url, many_folder, 2, many)
        _time_status(one_folder)
        _time_status(many_folder)  # warm the OS file cache
        one: list[int] = []
        lots: list[int] = []
        for _ in range(runs):
            one.append(_time_status(one_folder))
            lots.append(_time_status(many_folder))
        files = len(list(Path(many_folder).iterdir()))
    ratio = statistics.median(lots) / statistics.median(one)
    figures: dict[str, Any] = {
        "status_1_scope_ms": distribution(ns_to_ms(one)),
        f"status_{many}_scopes_ms": distribution(ns_to_ms(lots)),
        "scopes": many,
        "files_in_folder": files,
        "ratio": round(ratio, 3),
    }
    targets = {
        "status_many_vs_one": target(
            f"median({many} scopes) / median(1 scope) <= {RATIO_TARGET}", ratio, ratio <= RATIO_TARGET
        )
    }
    return Measured(figures, targets, notes=["Fresh `qts status` processes, interleaved; file store."])


def main(argv: list[str] | None = None) -> int:
    return run_script(__file__, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
