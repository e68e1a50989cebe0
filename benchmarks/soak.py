"""Soak: a simulated month of the whole runtime under one virtual clock, in a couple of minutes.

    python benchmarks/soak.py --days 30          # tox -e soak; exit 1 when a target is missed
    python benchmarks/soak.py --quick            # one simulated day (CI smoke; targets not judged)
    python benchmarks/soak.py --days 3 --seed 7  # any length, any seed

Two emulated KIS hosts (REAL and VTS, per-second limits on: REAL 20/s, VTS 2/s) and 8 workers
(4 per mode), each a runtime built by ``build_runtime`` with its own ``FileTokenStore`` over
ONE shared folder (both modes side by side), real HTTP on 127.0.0.1. The seeded schedule:

- every worker calls inquire-price / inquire-balance every 10-20 virtual minutes; each worker
  bursts (VTS 5-6, REAL 18-24 calls at the same instant, above the runtime's per-second limit)
  twice a day; at 09:00 KST and right after maintenance all 8 call at the same instant;
- every worker restarts (a new runtime over the same store) every 2-5 virtual hours; 1 in 5
  restarts is a crash (the runtime is dropped without ``close``);
- a few times a month a real child process (benchmarks/_soak_child.py) starts on the store,
  takes the token and calls once, and is killed with SIGKILL;
- nightly at 02:00 KST the emulators void every token (maintenance); the window lasts 30 min;
- the host clock drifts from the emulators' up to +-60 s and takes one NTP step (+60 s -> 0 s,
  a step backwards) halfway through; every runtime of the host reads that one clock;
- once a day a worker tries an order: the runtime must refuse it before the network.

Virtual time: one master clock drives both emulators. Runtimes read it through the host clock
(master + drift). Nothing advances time but the driver: it dispatches the scheduled calls to a
thread pool and, while calls are in flight, moves time to the next wake-up of a ``sleep`` (the
pacer, the issuance budget, a rate-limit retry) whenever every call in flight is asleep, or
when nothing has happened for a few real milliseconds (a thread blocked on a lock held by a
sleeper). The schedule is reproducible from the seed; the interleaving of concurrent calls is
the operating system's, as in production.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kis_emulator import KISEmulator, demo_account
from runtime.auth.session import KISRuntime
from runtime.auth.stores.file import FileTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AccessToken, AppCredentials, Mode
from runtime.broker.kis.auth import jwt_claim
from runtime.errors import (
    IssuanceRateLimitedError,
    OrderRefusedError,
    QTSError,
    TokenRejectedError,
)
from runtime.settings import Settings, StoreKind, TokenStoreSpec

BENCH_DIR = Path(__file__).resolve().parent
CHILD_SCRIPT = BENCH_DIR / "_soak_child.py"

DAY = 86_400.0
HOUR = 3_600.0
MINUTE = 60.0
KST = timedelta(hours=9)
# 2026-03-02 08:00 KST: the run starts on a Monday morning with an empty store.
START = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
MAINTENANCE_AT_KST_H = 2.0  # 02:00 KST every night
MAINTENANCE_WINDOW_S = 30 * MINUTE
MARKET_OPEN_KST_H = 9.0
TOKEN_LIFETIME_S = DAY
MAX_DRIFT_S = 60.0
WORKERS_PER_MODE = 4
CALL_GAP_S = (10 * MINUTE, 20 * MINUTE)
BURSTS_PER_DAY = 2
BURST_SIZE = {Mode.VTS: (5, 6), Mode.REAL: (18, 24)}
RESTART_GAP_S = (2 * HOUR, 5 * HOUR)
CRASH_SHARE = 0.2
CHILD_EVERY_DAYS = 3
SLOT_S = 10.0  # calls are scheduled on a 10 s grid so that workers collide
STALL_S = 0.02  # real seconds without any clock activity before time moves past a blocked thread
POOL_THREADS = 48
WALL_LIMIT_S = 900.0  # the whole run aborts after this much real time, whatever happens

PRICE = ("/uapi/domestic-stock/v1/quotations/inquire-price", "FHKST01010100")
BALANCE = ("/uapi/domestic-stock/v1/trading/inquire-balance", "TTTC8434R")
ORDER = ("/uapi/domestic-stock/v1/trading/order-cash", "TTTC0012U")
PRICE_PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
BALANCE_PARAMS = {
    "CANO": "50012345",
    "ACNT_PRDT_CD": "01",
    "AFHR_FLPR_YN": "N",
    "OFL_YN": "",
    "INQR_DVSN": "02",
    "UNPR_DVSN": "01",
    "FUND_STTL_ICLD_YN": "N",
    "FNCG_AMT_AUTO_RDPT_YN": "N",
    "PRCS_DVSN": "00",
    "CTX_AREA_FK100": "",
    "CTX_AREA_NK100": "",
}


class SoakStuckError(RuntimeError):
    """The run exceeded its real-time limit: something deadlocked."""


# ---------------------------------------------------------------------------------------- time


class VirtualTime:
    """The master clock (what the emulators read) and the driver's scheduler of sleeping calls.

    ``now``/``monotonic`` move only in ``advance`` (the driver) and in ``run_until``, which
    jumps to the earliest pending wake-up once every call in flight sleeps (or nothing has
    moved for ``STALL_S`` real seconds). ``sleep`` blocks the calling thread until then.
    """

    def __init__(self, start: datetime, wall_deadline: float) -> None:
        self._cond = threading.Condition()
        self._wall = start
        self._mono = 0.0
        self._wakes: list[tuple[float, int]] = []
        self._serial = itertools.count()
        self._active = 0
        self._activity = 0
        self._wall_deadline = wall_deadline
        self.jumps = 0
        self.stall_jumps = 0

    # EmulatorClock and the master side of ClockPort
    def now(self) -> datetime:
        with self._cond:
            self._activity += 1
            return self._wall

    def monotonic(self) -> float:
        with self._cond:
            self._activity += 1
            return self._mono

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._cond:
            wake = (self._mono + seconds, next(self._serial))
            heapq.heappush(self._wakes, wake)
            self._activity += 1
            self._cond.notify_all()
            while self._mono < wake[0]:
                self._check_deadline()
                self._cond.wait(timeout=0.5)
            self._wakes.remove(wake)
            heapq.heapify(self._wakes)
            self._activity += 1

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._move_to(self._mono + max(seconds, 0.0))

    # the driver's side
    def task_started(self) -> None:
        with self._cond:
            self._active += 1

    def task_done(self) -> None:
        with self._cond:
            self._active -= 1
            self._activity += 1
            self._cond.notify_all()

    def run_until(self, target: float) -> None:
        """Let the calls in flight run, moving time as they sleep, until time is ``target``."""
        with self._cond:
            self._run(target, until_idle=False)

    def drain(self, limit_s: float) -> None:
        """Run until no call is in flight (time moves at most ``limit_s``)."""
        with self._cond:
            self._run(self._mono + limit_s, until_idle=True)

    def _run(self, target: float, *, until_idle: bool) -> None:
        while True:
            self._check_deadline()
            if self._active == 0:
                if not until_idle:
                    self._move_to(target)
                return
            asleep = sum(1 for wake, _ in self._wakes if wake > self._mono)
            if asleep and asleep >= self._active:  # every call in flight sleeps: jump
                self.jumps += 1
                if not self._jump(target):
                    return
                continue
            seen = self._activity
            self._cond.wait(timeout=STALL_S)
            if self._activity == seen and asleep:
                # The awake calls made no move: they wait for a lock that a sleeper holds.
                self.stall_jumps += 1
                if not self._jump(target):
                    return

    @property
    def active(self) -> int:
        with self._cond:
            return self._active

    def _jump(self, target: float) -> bool:
        """Move to the earliest future wake-up if it comes before ``target`` (True), else to ``target``."""
        first = min((wake for wake, _ in self._wakes if wake > self._mono), default=math.inf)
        if first <= target:
            self._move_to(first)
            return True
        self._move_to(target)
        return False

    def _move_to(self, mono: float) -> None:
        if mono > self._mono:
            self._wall += timedelta(seconds=mono - self._mono)
            self._mono = mono
            self._cond.notify_all()

    def _check_deadline(self) -> None:
        if time.monotonic() > self._wall_deadline:
            raise SoakStuckError("the soak exceeded its real-time limit")


class HostDrift:
    """The host clock's offset from KIS: a slow drift within +-60 s and one NTP step."""

    def __init__(self, duration_s: float, phase: float) -> None:
        self.step_at = duration_s / 2
        self._duration = duration_s
        self._phase = phase

    def offset(self, t: float) -> float:
        wobble = 5.0 * math.sin(2 * math.pi * t / (0.7 * DAY) + self._phase)
        if t < self.step_at:  # from -30 s up to +55 s ...
            base = -30.0 + 85.0 * t / self.step_at
        else:  # ... NTP snaps it to 0, then it drifts down to -55 s
            base = -55.0 * (t - self.step_at) / max(self._duration - self.step_at, 1.0)
        return max(-MAX_DRIFT_S, min(MAX_DRIFT_S, base + wobble))


class HostClock:
    """ClockPort of the simulated host: the master clock plus the host's drift."""

    def __init__(self, master: VirtualTime, drift: HostDrift) -> None:
        self._master = master
        self._drift = drift

    def now(self) -> datetime:
        mono = self._master.monotonic()
        return self._master.now() + timedelta(seconds=self._drift.offset(mono))

    def monotonic(self) -> float:
        return self._master.monotonic()

    def sleep(self, seconds: float) -> None:
        self._master.sleep(seconds)


# ---------------------------------------------------------------------------------------- schedule


@dataclass(order=True)
class Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    worker: int = field(default=-1, compare=False)
    size: int = field(default=1, compare=False)


def kst_seconds(t: float) -> float:
    """Seconds since the last KST midnight at virtual time ``t``."""
    moment = START + KST + timedelta(seconds=t)
    return moment.hour * HOUR + moment.minute * MINUTE + moment.second


def next_kst(t: float, hour: float) -> float:
    """The first virtual time >= ``t`` at ``hour`` o'clock KST."""
    delta = (hour * HOUR - kst_seconds(t)) % DAY
    return t + delta


def build_schedule(days: float, seed: int) -> list[Event]:
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    duration = days * DAY
    serial = itertools.count()
    events: list[Event] = []
    workers = 2 * WORKERS_PER_MODE

    def slot(t: float) -> float:
        return round(t / SLOT_S) * SLOT_S

    def add(at: float, kind: str, worker: int = -1, size: int = 1) -> None:
        if 0 <= at < duration:
            events.append(Event(at, next(serial), kind, worker, size))

    for w in range(workers):
        mode = worker_mode(w)
        t = slot(rng.uniform(0, 5 * MINUTE))
        while t < duration:
            add(t, "balance" if rng.random() < 0.3 else "price", w)
            t = slot(t + rng.uniform(*CALL_GAP_S))
        for day in range(math.ceil(days)):
            for _ in range(BURSTS_PER_DAY):
                add(slot(day * DAY + rng.uniform(0, DAY)), "burst", w, rng.randint(*BURST_SIZE[mode]))
        t = rng.uniform(*RESTART_GAP_S)
        while t < duration:
            add(slot(t), "crash" if rng.random() < CRASH_SHARE else "restart", w)
            t += rng.uniform(*RESTART_GAP_S)
    t = next_kst(0.0, MAINTENANCE_AT_KST_H)
    while t < duration:
        add(t, "maintenance")
        add(t + 2 * MINUTE, "rush")  # everyone comes back at once after the void
        add(t + MAINTENANCE_WINDOW_S, "maintenance_end")
        t += DAY
    t = next_kst(0.0, MARKET_OPEN_KST_H)
    while t < duration:
        add(t, "rush")
        t += DAY
    for day in range(math.ceil(days)):
        add(slot(day * DAY + rng.uniform(10 * HOUR, 14 * HOUR)), "order", rng.randrange(workers))
        add(day * DAY, "day")
    for child, day in enumerate(range(0, math.ceil(days), CHILD_EVERY_DAYS)):
        add(slot(day * DAY + rng.uniform(3 * HOUR, 6 * HOUR)), "child", child % workers)
    add(duration - 1, "day")
    events.sort()
    return events


def worker_mode(index: int) -> Mode:
    return Mode.VTS if index % 2 == 0 else Mode.REAL


# ---------------------------------------------------------------------------------------- the run


def jwt_app_key(value: str) -> str | None:
    """The ``jti`` claim (KIS puts the app key there) of a JWT-shaped token, or None."""
    return jwt_claim(value, "jti")


@dataclass
class Outcome:
    worker: int
    at: float
    ok: bool
    error: str | None = None
    code: str | None = None


class Soak:
    def __init__(
        self, days: float, seed: int, folder: Path, master: VirtualTime, emulators: dict[Mode, KISEmulator]
    ) -> None:
        self.days = days
        self.duration = days * DAY
        self.seed = seed
        self.folder = folder
        self.emulators = emulators
        self.master = master
        self.drift = HostDrift(self.duration, phase=seed % 7)
        self.clock = HostClock(self.master, self.drift)
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.cross_mode = 0
        self.tokens_checked = 0
        self.orders_refused = 0
        self.order_attempts = 0
        self.restarts = 0
        self.crashes = 0
        self.children: list[dict[str, Any]] = []
        self.maintenance: list[tuple[float, float]] = []
        self.daily: list[dict[str, int]] = []
        self.untyped: list[str] = []
        self.runtimes: list[KISRuntime] = []
        self.generations: list[int] = []
        self.retired: list[KISRuntime] = []
        self.crashed: list[KISRuntime] = []
        self.inflight: Counter[int] = Counter()
        self.pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="soak")

    # ---- runtimes
    def settings(self, mode: Mode) -> Settings:
        account = demo_account(mode.value)
        return Settings(
            mode=mode,
            credentials=AppCredentials(account.app_key, account.app_secret),
            base_url=self.emulators[mode].base_url,
            token_store=TokenStoreSpec(StoreKind.FILE, str(self.folder)),
        )

    def build(self, worker: int) -> KISRuntime:
        return build_runtime(self.settings(worker_mode(worker)), clock=self.clock)

    def replace(self, worker: int, *, crash: bool) -> None:
        old = self.runtimes[worker]
        self.runtimes[worker] = self.build(worker)
        if crash:
            self.crashes += 1
            self.crashed.append(old)  # never closed; its sockets are reclaimed at the end, as by the OS
        else:
            self.restarts += 1
            self.retired.append(old)

    def close_idle_retired(self) -> None:
        with self.lock:
            idle = [r for r in self.retired if self.inflight[id(r)] == 0]
            self.retired = [r for r in self.retired if self.inflight[id(r)] != 0]
        for runtime in idle:
            runtime.close()

    # ---- calls
    def dispatch(self, worker: int, kind: str) -> None:
        runtime = self.runtimes[worker]
        with self.lock:
            self.inflight[id(runtime)] += 1
        self.master.task_started()
        self.pool.submit(self.call, worker, runtime, kind)

    def call(self, worker: int, runtime: KISRuntime, kind: str) -> None:
        at = self.master.monotonic()
        outcome = Outcome(worker, at, ok=True)
        try:
            if kind == "order":
                path, tr_id = ORDER
                with self.lock:
                    self.order_attempts += 1
                try:
                    runtime.call("POST", path, tr_id=tr_id, body={"PDNO": "005930", "ORD_QTY": "1"})
                except OrderRefusedError:
                    with self.lock:
                        self.orders_refused += 1
                return
            path, tr_id = BALANCE if kind == "balance" else PRICE
            params = BALANCE_PARAMS if kind == "balance" else PRICE_PARAMS
            runtime.call("GET", path, tr_id=tr_id, params=params)
        except QTSError as exc:
            outcome = Outcome(
                worker, self.master.monotonic(), ok=False, error=type(exc).__name__, code=exc.code
            )
        except Exception as exc:  # an untyped error is a finding: recorded, not raised
            outcome = Outcome(
                worker, self.master.monotonic(), ok=False, error=f"untyped:{type(exc).__name__}"
            )
            with self.lock:
                self.untyped.append(repr(exc))
        finally:
            self.check_token(worker, runtime.cache.peek())
            with self.lock:
                if kind != "order":
                    self.outcomes.append(outcome)
                self.inflight[id(runtime)] -= 1
            self.master.task_done()

    def check_token(self, worker: int, token: AccessToken | None) -> None:
        if token is None:
            return
        own = demo_account(worker_mode(worker).value).app_key
        with self.lock:
            self.tokens_checked += 1
            if jwt_app_key(token.value) != own or token.scope.mode is not worker_mode(worker):
                self.cross_mode += 1

    def check_store(self) -> None:
        for token in FileTokenStore(self.folder).tokens():
            own = demo_account(token.scope.mode.value).app_key
            with self.lock:
                self.tokens_checked += 1
                if jwt_app_key(token.value) != own:
                    self.cross_mode += 1

    # ---- the child process
    def child(self, worker: int) -> None:
        self.master.drain(limit_s=5 * MINUTE)  # a quiet moment: only the child sends tokenP now
        mode = worker_mode(worker)
        account = demo_account(mode.value)
        emulator = self.emulators[mode]
        before = emulator.counters()["token_requests"]
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.folder.parent),
            "SOAK_APP_KEY": account.app_key,
            "SOAK_APP_SECRET": account.app_secret,
        }
        proc = subprocess.Popen(  # noqa: S603 - this interpreter running our own script
            [
                sys.executable,
                str(CHILD_SCRIPT),
                mode.value,
                emulator.base_url,
                str(self.folder),
                self.clock.now().isoformat(),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            report: dict[str, Any] = json.loads(line) if line.strip() else {"error": "no report"}
        finally:
            proc.send_signal(signal.SIGKILL)
            _, stderr = proc.communicate(timeout=30)
        report["mode"] = mode.value
        report["killed"] = proc.returncode == -signal.SIGKILL
        report["tokenp_at_emulator"] = emulator.counters()["token_requests"] - before
        if "source" not in report:
            report["stderr_tail"] = stderr[-500:]
        self.children.append(report)
        if report.get("own_mode_token") is False:
            with self.lock:
                self.cross_mode += 1

    # ---- the day's figures
    def snapshot(self) -> dict[str, int]:
        snap: dict[str, int] = {}
        for mode, emulator in self.emulators.items():
            counters = emulator.counters()
            snap[f"{mode.value}.tokenp"] = counters["token_requests"]
            snap[f"{mode.value}.minted"] = counters["tokens_issued"]
        return snap

    def run(self) -> None:
        self.runtimes = [self.build(w) for w in range(2 * WORKERS_PER_MODE)]
        self.daily.append(self.snapshot())
        for event in build_schedule(self.days, self.seed):
            self.master.run_until(event.at)
            self.close_idle_retired()
            kind = event.kind
            if kind in ("price", "balance", "order"):
                self.dispatch(event.worker, kind)
            elif kind == "burst":
                for _ in range(event.size):
                    self.dispatch(event.worker, "price")
            elif kind == "rush":
                for w in range(len(self.runtimes)):
                    self.dispatch(w, "price")
            elif kind in ("restart", "crash"):
                self.replace(event.worker, crash=kind == "crash")
            elif kind == "maintenance":
                for emulator in self.emulators.values():
                    emulator.void_tokens()
                self.maintenance.append((event.at, event.at + MAINTENANCE_WINDOW_S))
            elif kind == "child":
                self.child(event.worker)
            elif kind == "day":
                self.check_store()
                if event.at > 0:
                    self.daily.append(self.snapshot())
        self.master.run_until(self.duration)
        self.master.drain(limit_s=HOUR)
        self.check_store()
        self.pool.shutdown(wait=True)
        for runtime in [*self.runtimes, *self.retired, *self.crashed]:
            runtime.close()

    # ---- the report
    def in_maintenance(self, at: float) -> tuple[float, float] | None:
        for start, end in self.maintenance:
            if start <= at <= end:
                return (start, end)
        return None

    def figures(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        counters = {mode.value: emu.counters() for mode, emu in self.emulators.items()}

        def code_total(code: str) -> int:
            return sum(int(c["errors_by_code"].get(code, 0)) for c in counters.values())

        per_day: dict[str, list[int]] = defaultdict(list)
        for before, after in itertools.pairwise(self.daily):
            for mode in ("VTS", "REAL"):
                per_day[mode].append(after[f"{mode}.tokenp"] - before[f"{mode}.tokenp"])
        outside: Counter[str] = Counter()
        inside: Counter[str] = Counter()
        unrecovered = 0
        samples: list[dict[str, Any]] = []
        outside_samples: list[dict[str, Any]] = []
        by_worker: dict[int, list[Outcome]] = defaultdict(list)
        for outcome in sorted(self.outcomes, key=lambda o: o.at):
            by_worker[outcome.worker].append(outcome)
        for outcome in self.outcomes:
            if outcome.ok:
                continue
            window = self.in_maintenance(outcome.at)
            if window is None:
                outside[outcome.error or "?"] += 1
                outside_samples.append(
                    {
                        "error": outcome.error,
                        "code": outcome.code,
                        "worker": f"{worker_mode(outcome.worker).value}-{outcome.worker}",
                        "at_day": round(outcome.at / DAY, 3),
                    }
                )
                continue
            inside[outcome.error or "?"] += 1
            samples.append(
                {
                    "error": outcome.error,
                    "code": outcome.code,
                    "worker": f"{worker_mode(outcome.worker).value}-{outcome.worker}",
                    "s_after_void": round(outcome.at - window[0], 1),
                }
            )
            later = [o for o in by_worker[outcome.worker] if o.at > window[1]]
            if not later or not later[0].ok:
                unrecovered += 1
        token_error_names = {
            TokenRejectedError.__name__,
            "StaleTokenError",
            IssuanceRateLimitedError.__name__,
        }
        token_errors_outside = sum(n for name, n in outside.items() if name in token_error_names)
        windows = len(self.maintenance)
        lifetimes = math.ceil(self.duration / TOKEN_LIFETIME_S)
        allowed = lifetimes + windows
        tokenp = {mode: int(c["token_requests"]) for mode, c in counters.items()}
        minted = {mode: int(c["tokens_issued"]) for mode, c in counters.items()}
        calls = len(self.outcomes)
        ok = sum(1 for o in self.outcomes if o.ok)
        child_tokenp = sum(
            int(c.get("tokenp_at_emulator", 0)) + int(c.get("issued", 0)) for c in self.children
        )
        figures: dict[str, Any] = {
            "days": self.days,
            "seed": self.seed,
            "workers": len(self.runtimes),
            "tokenp_per_scope_per_day": dict(per_day),
            "tokenp_per_scope": tokenp,
            "tokens_minted_per_scope": minted,
            "maintenance_windows": windows,
            "egw_answers_at_emulator": {
                code: code_total(code) for code in ("EGW00123", "EGW00121", "EGW00133", "EGW00201")
            },
            "errors_by_code_at_emulator": {mode: c["errors_by_code"] for mode, c in counters.items()},
            "calls_completed": ok,
            "calls_attempted": calls,
            "calls_ok_at_emulator": sum(int(c["calls_ok"]) for c in counters.values()),
            "errors_reaching_callers_outside_maintenance": dict(outside),
            "error_samples_outside_maintenance": outside_samples[:10],
            "errors_reaching_callers_inside_maintenance": dict(inside),
            "maintenance_error_samples": samples[:10],
            "maintenance_errors_not_recovered_after_window": unrecovered,
            "untyped_errors": self.untyped[:5],
            "cross_mode_tokens_seen": self.cross_mode,
            "tokens_checked_for_mode": self.tokens_checked,
            "orders_seen_at_emulator": sum(int(c["orders_attempted"]) for c in counters.values()),
            "order_attempts_refused_by_runtime": f"{self.orders_refused}/{self.order_attempts}",
            "restarts": self.restarts,
            "crashes": self.crashes,
            "child_processes": self.children,
            "drift_s": {
                "max_abs": MAX_DRIFT_S,
                "ntp_step_at_day": round(self.drift.step_at / DAY, 2),
                "ntp_step_s": round(
                    self.drift.offset(self.drift.step_at) - self.drift.offset(self.drift.step_at - 1e-6), 1
                ),
            },
            "virtual_time_jumps": {"all_asleep": self.master.jumps, "stalled": self.master.stall_jumps},
        }
        worst = max(tokenp.values())
        targets = {
            "tokenp_per_scope": target(
                f"each scope: at most 1 tokenP per token lifetime ({lifetimes}) + 1 per maintenance "
                f"window ({windows}) = {allowed}",
                worst,
                worst <= allowed,
            ),
            "egw00133": target(
                "0 EGW00133 at the emulators", code_total("EGW00133"), code_total("EGW00133") == 0
            ),
            "token_errors_outside_maintenance": target(
                "0 token errors (rejected, stale, issuance rate limited) reach a caller outside maintenance",
                token_errors_outside,
                token_errors_outside == 0,
            ),
            "errors_outside_maintenance": target(
                "0 errors of any type reach a caller outside maintenance",
                sum(outside.values()),
                sum(outside.values()) == 0,
            ),
            "maintenance_errors_recovered": target(
                "every error inside a maintenance window is typed and that worker's next call after the "
                "window succeeds",
                unrecovered + sum(n for name, n in inside.items() if name.startswith("untyped")),
                unrecovered == 0 and not any(name.startswith("untyped") for name in inside),
            ),
            "cross_mode_tokens": target("0 cross-mode tokens", self.cross_mode, self.cross_mode == 0),
            "orders": target(
                "0 orders at the emulators",
                figures["orders_seen_at_emulator"],
                figures["orders_seen_at_emulator"] == 0 and self.orders_refused == self.order_attempts,
            ),
            "child_restarts_reuse_the_store": target(
                "every child process reuses the stored token: 0 tokenP, killed by SIGKILL",
                child_tokenp,
                child_tokenp == 0
                and all(
                    c.get("source") == "store" and c.get("call_ok") and c.get("killed") for c in self.children
                ),
            ),
        }
        return figures, targets


def target(text: str, measured: float | int, met: bool) -> dict[str, Any]:
    return {"target": text, "measured": measured, "met": bool(met)}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def run(days: float = 30, seed: int = 20260302, *, quick: bool = False) -> dict[str, Any]:
    """Run the soak for ``days`` simulated days; returns the JSON report as a dict."""
    started = time.monotonic()
    master = VirtualTime(START, wall_deadline=started + WALL_LIMIT_S)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qts-soak-"))) / "tokens"
        emulators = {
            mode: stack.enter_context(KISEmulator(mode.value, clock=master)) for mode in (Mode.VTS, Mode.REAL)
        }
        soak = Soak(days, seed, folder, master, emulators)
        soak.run()
        figures, targets = soak.figures()
    wall = time.monotonic() - started
    figures["wall_s"] = round(wall, 1)
    targets["wall_time"] = target(
        "under 2 minutes of wall time for 30 simulated days (pro rata for shorter runs)",
        round(wall, 1),
        wall <= 120.0 * max(days, 1) / 30 or wall <= 120.0,
    )
    return {
        "benchmark": "soak",
        "quick": quick,
        "machine": machine(),
        "figures": figures,
        "targets": targets,
        "notes": [
            "tokenP counts are requests seen by the emulators (one scope per emulator).",
            "Errors inside a maintenance window (void at 02:00 KST, 30 min) are listed apart; the target "
            "asks that they be typed QTSErrors and that the worker's next call after the window succeeds.",
            "Crashed in-process runtimes are never closed during the run; their sockets are reclaimed at "
            "the end, as the OS would on process death. Child processes are killed with SIGKILL.",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=float, default=30.0, help="simulated days (default 30)")
    parser.add_argument("--seed", type=int, default=20260302, help="schedule seed")
    parser.add_argument(
        "--quick", action="store_true", help="one simulated day; targets reported, not judged"
    )
    args = parser.parse_args(argv)
    days = 1.0 if args.quick else args.days
    result = run(days, args.seed, quick=args.quick)
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    if args.quick:
        return 0
    return 0 if all(t["met"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
