"""Tokens across processes: tokenP count for N processes x M restarts, and cold-start latency.

Part 1: M rounds; each round starts N ``qts token --reveal`` processes at one instant (a barrier
file) on one shared FileTokenStore folder, against the KIS emulator (in this process, so its
counters can be read). Target: exactly one tokenP in all, and one token value everywhere.

Part 2, cold start (what a new process pays before its first call):
- ``process_*``: a whole ``qts token --reveal`` child, store hit vs issuance (empty folder);
- ``in_process_*``: the first ``access_token()`` of a freshly built runtime on a file store,
  store hit vs issuance, i.e. without the interpreter's start-up and ``build_runtime``.
Issuance samples move the emulator's clock 61 s between samples (KIS: one tokenP a minute).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, Measured, compile_package, distribution, ns_to_ms, perf_ns, run_script, target
from kis_emulator import KISEmulator, demo_account
from runtime.auth.stores.file import FileTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.settings import Settings, StoreKind, TokenStoreSpec

sys.path.insert(0, str(REPO))
from tests.support.processes import child_env, start_at_once


def _token_requests(emulator: KISEmulator) -> int:
    return int(emulator.counters()["token_requests"])


def _round(env: dict[str, str], work: Path, n: int, tag: str) -> list[str]:
    """N processes released together; returns what each printed."""
    children = start_at_once(env, work, n, tag=f"-{tag}", timeout_s=120)
    outputs = []
    for child in children:
        stdout, stderr = child.communicate(timeout=120)
        if child.returncode != 0:
            raise RuntimeError(f"a qts child failed (exit {child.returncode}): {stderr.strip()}")
        outputs.append(stdout.strip())
    return outputs


def processes_and_restarts(n: int, m: int) -> dict[str, Any]:
    with KISEmulator("VTS") as emulator, tempfile.TemporaryDirectory(prefix="qts-bench-") as tmp:
        work = Path(tmp)
        env = child_env(emulator, work / "cache")
        per_round = []
        values: set[str] = set()
        for r in range(m):
            before = _token_requests(emulator)
            printed = _round(env, work, n, str(r))
            values.update(printed)
            per_round.append(_token_requests(emulator) - before)
        return {
            "processes": n,
            "restarts": m,
            "process_starts": n * m,
            "tokenp_total": _token_requests(emulator),
            "tokenp_per_round": per_round,
            "distinct_tokens": len(values),
        }


def _time_child(env: dict[str, str], work: Path) -> float:
    started = perf_ns()
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "token", "--reveal"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = ns_to_ms([perf_ns() - started])[0]
    if done.returncode != 0:
        raise RuntimeError(f"qts token failed: {done.stderr.strip()}")
    return elapsed


def cold_start(samples: int) -> dict[str, Any]:
    account = demo_account("VTS")
    with KISEmulator("VTS") as emulator, tempfile.TemporaryDirectory(prefix="qts-bench-") as tmp:
        work = Path(tmp)
        process_issue, process_hit, inproc_issue, inproc_hit = [], [], [], []
        for i in range(samples):
            emulator.advance(61)
            process_issue.append(_time_child(child_env(emulator, work / f"empty-{i}"), work))
            process_hit.append(_time_child(child_env(emulator, work / f"empty-{i}"), work))

        settings = Settings(
            mode=Mode.VTS,
            credentials=AppCredentials(account.app_key, account.app_secret),
            base_url=emulator.base_url,
        )
        for i in range(samples):
            emulator.advance(61)
            for bucket in (inproc_issue, inproc_hit):  # the second start finds the first one's token
                spec = TokenStoreSpec(StoreKind.FILE, str(work / f"inproc-{i}"))
                built = Settings(
                    mode=settings.mode,
                    credentials=settings.credentials,
                    base_url=settings.base_url,
                    token_store=spec,
                )
                with build_runtime(built) as kis:  # TLS context and pool: the same either way
                    started = perf_ns()
                    kis.access_token()
                    bucket.append(ns_to_ms([perf_ns() - started])[0])
                    source = kis.cache.last_source
                expected = "issued" if bucket is inproc_issue else "store"
                if source != expected:
                    raise RuntimeError(f"expected a {expected} start, got {source}")
        stored = FileTokenStore(work / "inproc-0").tokens()
        return {
            "process_issue_ms": distribution(process_issue),
            "process_store_hit_ms": distribution(process_hit),
            "in_process_issue_ms": distribution(inproc_issue),
            "in_process_store_hit_ms": distribution(inproc_hit),
            "stored_tokens_after": len(stored),
        }


def run(quick: bool) -> Measured:
    compile_package()  # timed children start as an installed copy would
    n, m, samples = (4, 2, 3) if quick else (8, 5, 10)
    fleet = processes_and_restarts(n, m)
    latency = cold_start(samples)
    figures = {"processes_x_restarts": fleet, "cold_start": latency}
    targets = {
        "one_tokenp_per_scope_per_lifetime": target(
            f"{n} processes x {m} restarts send exactly one tokenP",
            fleet["tokenp_total"],
            fleet["tokenp_total"] == 1,
        ),
        "one_token_everywhere": target(
            "every process ends with the same token", fleet["distinct_tokens"], fleet["distinct_tokens"] == 1
        ),
        "store_hit_faster_than_issuance": target(
            "in-process start from the store is faster than one that issues (median ratio < 1)",
            latency["in_process_store_hit_ms"]["median"] / latency["in_process_issue_ms"]["median"],
            latency["in_process_store_hit_ms"]["median"] < latency["in_process_issue_ms"]["median"],
        ),
    }
    return Measured(
        figures,
        targets,
        notes=[
            "KIS emulator on 127.0.0.1 in the benchmark process; issuance latency is the emulator's, "
            "not KIS's (a real tokenP takes longer and, on REAL, sends a KakaoTalk notice).",
            "process_* include the interpreter start-up and imports of a `qts token` child.",
        ],
    )


if __name__ == "__main__":
    sys.exit(run_script(__file__, __doc__, run, fail_on_missed_target=True))
