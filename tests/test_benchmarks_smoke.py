"""The benchmark scripts keep working: each runs with ``--quick`` and prints one JSON report.

Targets are not judged here (CI machines are noisy); only the shape of the report is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(
    p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"
)


def _run_quick(script: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our interpreter running our own script
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON object, got {len(lines)} lines"
    report: dict[str, Any] = json.loads(lines[0])
    return report


def test_every_known_benchmark_is_present() -> None:
    """The five figures the README documents have their scripts (processes may come separately)."""
    assert {
        "call_overhead.py",
        "token_cache_hit.py",
        "tokens_stampede.py",
        "startup.py",
        "emulator_headroom.py",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_prints_one_json_report(script: str) -> None:
    """A quick run exits 0 and prints one object with machine, figures and judged-shape targets."""
    report = _run_quick(script)
    assert report["benchmark"] == script.removesuffix(".py")
    assert report["quick"] is True
    assert set(report["machine"]) >= {"cpus", "python", "platform"}
    assert report["figures"]
    distributions = [v for v in report["figures"].values() if isinstance(v, dict) and "median" in v]
    for figure in distributions:
        assert {"median", "p90", "p99", "n"} <= set(figure)
    assert report["targets"]
    for item in report["targets"].values():
        assert set(item) >= {"target", "measured", "met"}
        assert isinstance(item["met"], bool)
