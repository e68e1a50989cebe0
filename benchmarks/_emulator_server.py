"""Child process for the benchmarks: one KIS emulator without a call limit on 127.0.0.1.

Usage: ``python _emulator_server.py MODE MAX_LIFE_S [KEYS]``. Prints the base URL on one line,
then serves until its stdin closes (the parent exited or is done) or MAX_LIFE_S passes.

With ``KEYS`` (the cold-start benchmarks), ``KEYS`` more app keys of MODE are registered
(:func:`bench_account`) and tokenP is not limited to one a minute, so that every fresh process
or new runtime pays a real tokenP.
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

from kis_emulator import EmulatorAccount, EmulatorConfig, KISEmulator, default_accounts


def bench_account(mode: str, index: int) -> EmulatorAccount:
    """The ``index``-th extra account: a 36-character key and a 180-character secret, as KIS's."""
    return EmulatorAccount(mode, f"PS{index:034d}", f"{index:0180d}")


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "VTS"
    max_life_s = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    keys = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or went away
        done.set()

    config = EmulatorConfig(max_rps=None)
    accounts = None
    if keys:
        config = EmulatorConfig(max_rps=None, token_request_interval=timedelta(0))
        accounts = [*default_accounts(), *(bench_account(mode, i) for i in range(1, keys + 1))]
    with KISEmulator(mode, accounts=accounts, config=config) as emulator:
        threading.Thread(target=watch_stdin, daemon=True).start()
        print(emulator.base_url, flush=True)
        done.wait(timeout=max_life_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
