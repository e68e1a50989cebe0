"""Run every benchmark script, print each figure with its target, and save the JSON objects.

    python benchmarks/run_all.py            # full run (tox -e bench)
    python benchmarks/run_all.py --quick    # smoke run: few iterations, targets not judged
    python benchmarks/run_all.py --strict   # exit 3 when a target is missed
    python benchmarks/run_all.py --json out.json

Exit status: 0 when every script ran (missed targets are listed, and fail only with
``--strict``), 1 when a script broke or printed something other than one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent

SCRIPTS = (
    "call_overhead.py",
    "token_cache_hit.py",
    "call_budget.py",
    "tokens_stampede.py",
    "tokens_processes.py",
    "startup.py",
    "cold_start.py",
    "warm_runtime.py",
    "status_scale.py",
    "emulator_headroom.py",
    "stream.py",
)
SCRIPT_TIMEOUT_S = 600


def _run(script: Path, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    done = subprocess.run(  # noqa: S603 - our interpreter running our own scripts
        cmd, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, cwd=BENCH_DIR.parent, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} exited {done.returncode}:\n{done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise RuntimeError(f"{script.name} printed {len(lines)} lines, not one JSON object")
    result: dict[str, Any] = json.loads(lines[0])
    return result


def _summary(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"median {value['median']}  p90 {value['p90']}  p99 {value['p99']}  (n={value['n']})"
    return json.dumps(value, ensure_ascii=False)


def _print(result: dict[str, Any]) -> None:
    print(f"== {result['benchmark']}{' (quick)' if result.get('quick') else ''}")
    for name, value in result["figures"].items():
        print(f"   {name:40s} {_summary(value)}")
    for name, item in result["targets"].items():
        mark = "met" if item["met"] else "MISSED"
        print(f"   target {name:33s} {mark:6s} measured {item['measured']}  ({item['target']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run; targets are not judged")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--json", metavar="PATH", help="write every result as one JSON list to PATH")
    args = parser.parse_args(argv)

    results: list[dict[str, Any]] = []
    broken: list[str] = []
    skipped: list[str] = []
    for name in SCRIPTS:
        script = BENCH_DIR / name
        if not script.is_file():
            skipped.append(name)
            print(f"== {name}: skipped (not in this checkout)")
            continue
        try:
            result = _run(script, args.quick)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            broken.append(name)
            print(f"== {name}: BROKEN: {exc}")
            continue
        results.append(result)
        _print(result)
        sys.stdout.flush()

    missed = [
        f"{r['benchmark']}.{name}" for r in results for name, item in r["targets"].items() if not item["met"]
    ]
    machine = results[0]["machine"] if results else {}
    print(f"== machine: {json.dumps(machine)}")
    if skipped:
        print(f"== skipped: {', '.join(skipped)}")
    if args.quick:
        print("== quick run: targets reported, not judged")
    elif missed:
        print(f"== targets missed: {', '.join(missed)}")
    else:
        print("== every target met")
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if broken:
        return 1
    if args.strict and missed and not args.quick:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
