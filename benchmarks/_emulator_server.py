"""Child process for the benchmarks: one KIS emulator without a call limit on 127.0.0.1.

Usage: ``python _emulator_server.py MODE MAX_LIFE_S``. Prints the base URL on one line, then
serves until its stdin closes (the parent exited or is done) or MAX_LIFE_S passes.
"""

from __future__ import annotations

import sys
import threading

from kis_emulator import EmulatorConfig, KISEmulator


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "VTS"
    max_life_s = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or went away
        done.set()

    with KISEmulator(mode, config=EmulatorConfig(max_rps=None)) as emulator:
        threading.Thread(target=watch_stdin, daemon=True).start()
        print(emulator.base_url, flush=True)
        done.wait(timeout=max_life_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
