"""``qts approval`` and ``qts stream``, run as child processes against the emulator on 127.0.0.1.

The issue's "Done when" scenarios: a 20-event JSON stream through a forced drop and a voided
approval key; three runs issuing one approval key; a second stream refused with the typed
"session held by ..." error (exit 7) while the first keeps streaming; over 41 registrations
exit 2 before connecting.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from typing import Any

from kis_emulator import EmulatorAccount, KISEmulator
from tests.support.cli import QTS, REAL_MARKER, TIMEOUT_S, Result
from tests.support.emulator import Emulators

#: A whole approval key as the emulator issues them (UUIDs); a masked one never matches.
FULL_APPROVAL_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def stream_env(qts: QTS, emulator: KISEmulator, account: EmulatorAccount, **extra: str) -> dict[str, str]:
    return qts.env(emulator, account, **{f"KIS_{emulator.mode}_WS_URL": emulator.ws_url, **extra})


def check_trade_line(line: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(line)
    assert event["tr_id"] == "H0STCNT0"
    assert event["code"] == "005930"
    assert re.fullmatch(r"[0-2]\d[0-5]\d[0-5]\d", event["time"])
    assert type(event["price"]) is int
    assert event["price"] > 0
    assert type(event["volume"]) is int
    assert event["volume"] > 0
    return event


def assert_no_approval_key(*results: Result) -> None:
    for result in results:
        assert not FULL_APPROVAL_KEY.search(result.stdout), f"an approval key on stdout of {result}"
        assert not FULL_APPROVAL_KEY.search(result.stderr), f"an approval key on stderr of {result}"


class LiveRun:
    """A ``qts stream`` child whose stdout lines are read as they come."""

    def __init__(self, qts: QTS, args: list[str], env: dict[str, str]) -> None:
        self.qts, self.args, self.env = qts, args, env
        self.started = time.monotonic()
        self.process = qts.start(args, env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_lines(self, n: int, within_s: float = TIMEOUT_S) -> list[str]:
        ends = time.monotonic() + within_s
        while len(self.seen) < n:
            left = ends - time.monotonic()
            assert left > 0, f"only {len(self.seen)} lines of qts {' '.join(self.args)} in {within_s} s"
            try:
                self.seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                continue
        return self.seen

    def finish(self) -> Result:
        try:
            self.process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(timeout=5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.process.stderr is not None
        assert self.process.stdout is not None
        with self.process.stderr, self.process.stdout:
            stderr = self.process.stderr.read()
        result = Result(
            tuple(self.args),
            self.process.returncode,
            "".join(self.seen),
            stderr,
            time.monotonic() - self.started,
        )
        self.qts.assert_no_leak(result, self.env, token_on_stdout=False)
        assert_no_approval_key(result)
        return result


def test_approval_issues_once_then_reuses_the_stored_key(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = stream_env(qts, emulator, vts_account)
    runs = [qts.run("approval", "--json", env=env) for _ in range(3)]
    assert [r.returncode for r in runs] == [0, 0, 0]
    answers = [json.loads(r.stdout) for r in runs]
    assert [a["source"] for a in answers] == ["issued", "store", "store"]
    assert {a["mode"] for a in answers} == {"VTS"}
    assert len({a["approval_key"] for a in answers}) == 1
    assert "…" in answers[0]["approval_key"]
    assert emulator.stream_counters()["approval_keys_issued"] == 1
    human = qts.run("approval", env=env)
    assert human.returncode == 0
    assert "source        store" in human.stdout
    assert_no_approval_key(*runs, human)


def test_forget_drops_the_cached_approval_key_too(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = stream_env(qts, emulator, vts_account)
    issued = json.loads(qts.run("approval", "--json", env=env).stdout)

    forgot = qts.run("forget", "--json", env=env)
    after = json.loads(qts.run("approval", "--json", env=env).stdout)

    assert forgot.returncode == 0, forgot
    assert json.loads(forgot.stdout)["approval_keys_forgotten"] == [issued["approval_key"]]
    assert after["source"] == "issued"  # nothing cached any more: a new key was asked for
    assert emulator.stream_counters()["approval_keys_issued"] == 2
    assert_no_approval_key(forgot)


def test_stream_count_20_json_survives_a_forced_drop_and_a_voided_approval_key(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS", ws_tick_interval=0.1)
    run = LiveRun(
        qts, ["stream", "005930", "--count", "20", "--json"], stream_env(qts, emulator, vts_account)
    )
    run.wait_lines(5)
    emulator.void_approval_keys()
    assert emulator.drop_streams() == 1
    result = run.finish()
    assert result.returncode == 0, result
    lines = result.stdout_lines
    assert len(lines) == 20
    for line in lines:
        check_trade_line(line)
    counters = emulator.stream_counters()
    assert counters["ws_drops"] == 1
    assert counters["ws_errors_by_code"]["OPSP0011"] == 1  # the old key, once
    assert counters["approval_keys_issued"] == 2  # reissued once
    assert counters["ws_connections"] == 3


def test_three_stream_runs_in_a_row_issue_one_approval_key(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS", ws_tick_interval=0.02)
    env = stream_env(qts, emulator, vts_account)
    runs = [qts.run("stream", "005930", "--count", "5", "--json", env=env) for _ in range(3)]
    for result in runs:
        assert result.returncode == 0, result
        assert len(result.stdout_lines) == 5
        for line in result.stdout_lines:
            check_trade_line(line)
    assert emulator.stream_counters()["approval_keys_issued"] == 1
    assert emulator.stream_counters()["approval_requests"] == 1
    assert_no_approval_key(*runs)


def test_a_second_stream_on_the_same_key_exits_7_naming_the_holder_while_the_first_keeps_streaming(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS", ws_tick_interval=0.05)
    env = stream_env(qts, emulator, vts_account)
    first = LiveRun(qts, ["stream", "005930", "--seconds", "8", "--json"], env)
    first.wait_lines(3)
    second = qts.run("stream", "005930", "--count", "3", env=env)
    shown_when_refused = len(first.seen)
    assert second.returncode == 7, second
    assert re.search(rf"session held by \S+ \(pid {first.process.pid}\)", second.stderr), second
    assert "Traceback" not in second.stderr
    assert len(second.stderr_lines) <= 2
    first.wait_lines(shown_when_refused + 10)  # still streaming
    result = first.finish()
    assert result.returncode == 0, result
    counters = emulator.stream_counters()
    assert counters["ws_connections"] == 1  # the second never connected: nobody was kicked
    assert "OPSP8996" not in counters["ws_errors_by_code"]


def test_more_than_41_registrations_exit_2_before_connecting(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = stream_env(qts, emulator, vts_account)
    codes = [f"{n:06d}" for n in range(1, 43)]
    refused = qts.run("stream", *codes, env=env)
    assert refused.returncode == 2, refused
    assert "42 registrations" in refused.stderr
    with_depth = qts.run("stream", *codes[:21], "--depth", env=env)
    assert with_depth.returncode == 2, with_depth
    counters = emulator.stream_counters()
    assert counters.get("ws_connections", 0) == 0
    assert counters["approval_requests"] == 0


def test_depth_streams_the_order_book_best_first(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS", ws_tick_interval=0.02)
    result = qts.run(
        "stream", "005930", "--depth", "--count", "10", "--json", env=stream_env(qts, emulator, vts_account)
    )
    assert result.returncode == 0, result
    books = [json.loads(line) for line in result.stdout_lines if '"H0STASP0"' in line]
    assert books
    for book in books:
        assert book["code"] == "005930"
        asks, bids = book["asks"], book["bids"]
        assert all(len(level) == 2 and all(type(v) is int for v in level) for level in asks + bids)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert bids[0][0] < asks[0][0]


def test_seconds_ends_the_stream_with_exit_0(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS", ws_tick_interval=0.05)
    result = qts.run(
        "stream", "005930", "000660", "--seconds", "1.5", env=stream_env(qts, emulator, vts_account)
    )
    assert result.returncode == 0, result
    assert result.stdout_lines
    assert {line.split()[1] for line in result.stdout_lines} <= {"005930", "000660"}
    assert result.seconds < TIMEOUT_S


def test_stream_in_real_mode_carries_the_marker_and_keeps_stdout_pure_json(
    qts: QTS, emulators: Emulators, real_account: EmulatorAccount
) -> None:
    emulator = emulators.start("REAL", ws_tick_interval=0.02)
    env = stream_env(qts, emulator, real_account)
    result = qts.run("stream", "005930", "--count", "3", "--json", env=env)
    assert result.returncode == 0, result
    assert REAL_MARKER in result.stderr
    for line in result.stdout_lines:
        check_trade_line(line)
    approval = qts.run("approval", env=env)
    assert REAL_MARKER in approval.stdout
    assert "REAL" in approval.stdout


def test_a_websocket_url_override_may_name_only_kis_or_loopback(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    refused = qts.run(
        "stream",
        "005930",
        "--count",
        "1",
        env=qts.env(emulator, vts_account, KIS_VTS_WS_URL="ws://example.com:31000"),
    )
    assert refused.returncode == 2, refused
    assert "KIS_VTS_WS_URL" in refused.stderr
    assert emulator.stream_counters()["approval_requests"] == 0


def test_rejected_credentials_exit_3_without_a_stream(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = stream_env(qts, emulator, vts_account, KIS_VTS_APP_SECRET="x" * 180)
    result = qts.run("stream", "005930", "--count", "1", env=env)
    assert result.returncode == 3, result
    assert emulator.stream_counters().get("ws_subscribes", 0) == 0


def test_processes_asking_together_share_one_approval_issuance(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = stream_env(qts, emulator, vts_account)
    runs = qts.run_all(*[(("approval", "--json"), env) for _ in range(4)])
    assert [r.returncode for r in runs] == [0] * 4, runs
    assert sorted(json.loads(r.stdout)["source"] for r in runs) == ["issued", "store", "store", "store"]
    assert emulator.stream_counters()["approval_requests"] == 1
