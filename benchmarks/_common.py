"""Shared pieces of the benchmark scripts: arguments, statistics, the JSON report, the emulator.

Every script prints exactly one JSON object on stdout::

    {"benchmark": name, "quick": bool, "machine": {"cpus", "python", "platform"},
     "figures": {...}, "targets": {name: {"target", "measured", "met"}}, "notes": [...]}

Figures that are distributions carry ``median``, ``p90``, ``p99`` and ``n``; the unit is in the
figure's name (``_us``, ``_ms``, ``_ns``). Targets are ratios or counts measured in the same run,
except the start-up times, which are absolute (and shown next to the bare interpreter's time).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent

# The Python that runs the benchmarks also runs the emulator child, so both see the same runtime.
_EMULATOR_SCRIPT = BENCH_DIR / "_emulator_server.py"
# A child emulator stops by itself after this long even if we never tell it to.
EMULATOR_MAX_LIFE_S = 600


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--quick``: a few hundred iterations for the CI smoke run; targets are reported, not judged."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few iterations, targets reported but not judged"
    )
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def distribution(samples: Sequence[float], *, digits: int = 3) -> dict[str, Any]:
    """Median, p90, p99 (and min/max, n) of ``samples``, rounded to ``digits``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        p90 = p99 = ordered[0]
    else:
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        p90, p99 = cuts[89], cuts[98]
    return {
        "median": round(statistics.median(ordered), digits),
        "p90": round(p90, digits),
        "p99": round(p99, digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


def target(text: str, measured: float | int, met: bool) -> dict[str, Any]:
    """One target: what it says, what was measured, whether it holds."""
    value = round(measured, 4) if isinstance(measured, float) else measured
    return {"target": text, "measured": value, "met": bool(met)}


def report(
    name: str,
    *,
    quick: bool,
    figures: dict[str, Any],
    targets: dict[str, dict[str, Any]],
    notes: Sequence[str] = (),
) -> None:
    """Print the one JSON object of a benchmark run."""
    out = {
        "benchmark": name,
        "quick": quick,
        "machine": machine(),
        "figures": figures,
        "targets": targets,
        "notes": list(notes),
    }
    sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class Measured(NamedTuple):
    """What one run of a benchmark found: the report's figures, targets and notes."""

    figures: dict[str, Any]
    targets: dict[str, dict[str, Any]]
    notes: Sequence[str] = ()


def run_script(
    script: str,
    description: str | None,
    measure: Callable[[bool], Measured],
    argv: Sequence[str] | None = None,
    *,
    fail_on_missed_target: bool = False,
) -> int:
    """The ``main`` of every benchmark script: parse ``--quick``, measure, print the one report.

    The benchmark is named after ``script`` (the caller's ``__file__``). Returns the exit
    status: 0, or 1 when ``fail_on_missed_target`` and a full (not quick) run missed a target.
    """
    args = parse_args(description or "", argv)
    measured = measure(args.quick)
    report(
        Path(script).stem,
        quick=args.quick,
        figures=measured.figures,
        targets=measured.targets,
        notes=measured.notes,
    )
    missed = not all(t["met"] for t in measured.targets.values())
    return 1 if fail_on_missed_target and not args.quick and missed else 0


def ns_to_us(values: Sequence[int]) -> list[float]:
    return [v / 1000.0 for v in values]


def ns_to_ms(values: Sequence[int]) -> list[float]:
    return [v / 1_000_000.0 for v in values]


@contextmanager
def emulator_process(mode: str = "VTS", keys: int = 0) -> Iterator[str]:
    """An emulator with no call limit in a child process on 127.0.0.1; yields its base URL.

    A separate process keeps the server's Python work off the client's GIL, as with a real host.
    With ``keys``, that many more app keys are registered (``_emulator_server.bench_account``)
    and tokenP is not limited to one a minute.
    The child stops when its stdin closes (we exit or crash) or after EMULATOR_MAX_LIFE_S.
    """
    child = subprocess.Popen(  # noqa: S603 - our own interpreter running our own script
        [sys.executable, str(_EMULATOR_SCRIPT), mode, str(EMULATOR_MAX_LIFE_S), str(keys)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the emulator child did not start (said {line!r})")
        yield line
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


def perf_ns() -> int:
    return time.perf_counter_ns()


def time_child_ns(cmd: Sequence[str], env: dict[str, str], *, kill_after_s: float = 60.0) -> int:
    """Wall time of one child process, start to exit; raises RuntimeError when it fails.

    ``wait`` without a timeout blocks in waitpid (no 50 ms polling); a timer kills a hung child.
    """
    started = perf_ns()
    child = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # noqa: S603
    watchdog = threading.Timer(kill_after_s, child.kill)
    watchdog.start()
    try:
        _, err = child.communicate()
    finally:
        watchdog.cancel()
    elapsed = perf_ns() - started
    if child.returncode != 0:
        raise RuntimeError(f"{list(cmd)[:3]!r} exited {child.returncode}: {err.decode()[-1500:]}")
    return elapsed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on loopback, or None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="qts-bench-redis-") as folder:
        server = subprocess.Popen(  # noqa: S603 - the installed redis-server, fixed arguments
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(timeout=10)


def compile_package() -> None:
    """Write the runtime's bytecode, as installing it would, before timing fresh processes.

    With ``PYTHONDONTWRITEBYTECODE=1`` and an editable install every child would otherwise
    compile the package's modules from source (~40 ms), a cost no installed copy pays (pip
    compiles what it installs, which the raw baselines' urllib3 already enjoys)."""
    import runtime

    compileall.compile_dir(Path(runtime.__file__).parent, quiet=1)
