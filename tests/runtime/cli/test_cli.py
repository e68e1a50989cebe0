"""The ``qts`` command, run as a child process against a KIS emulator on 127.0.0.1.

Exit codes: 0 ok; 2 configuration or usage; 3 credentials rejected (a key of the other mode
included); 4 broker unavailable or malformed answer; 5 rate limited. Errors are at most two
lines on stderr, without a traceback unless ``-v`` is given.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3

from kis_emulator import (
    DEMO_VTS_ACCOUNT,
    DEMO_VTS_APP_KEY,
    DEMO_VTS_APP_SECRET,
    EmulatorAccount,
    KISEmulator,
    default_accounts,
)
from tests.support.cli import FULL_TOKEN, QTS, REAL_MARKER, EmulatorClient, Result
from tests.support.emulator import Emulators
from tests.support.kis import PRICE_TR_ID, TOKEN_PATH

DEMO_STEPS = [
    "mode",
    "issue",
    "cache",
    "quote",
    "expiry",
    "reissue",
    "retry",
    "revoke",
    "stream",
    "summary",
]
MASKED = re.compile(r"^\S{4}…\S{4}\(\d+ chars\)$")


def without_host_note(stderr: str) -> str:
    """stderr without the note every command run against a non-official host prints."""
    lines = stderr.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("qts: note: ") or "official host" not in line]
    return "".join(kept)


def requests_to(emulator: KISEmulator, path: str) -> int:
    count = emulator.counters()["requests_by_endpoint"].get(path, 0)
    assert isinstance(count, int)
    return count


def field(result: Result, name: str) -> str:
    """The value of a ``name    value`` line of human output."""
    for line in result.stdout_lines:
        if line.startswith(name + " "):
            return line[len(name) :].strip()
    raise AssertionError(f"no {name!r} line in\n{result}")


def issued_token(client: EmulatorClient) -> str:
    """The token the command was handed: one minute later tokenP hands back the same one (6 h reuse)."""
    client.emulator.advance(61)
    return client.token()


# --------------------------------------------------------------------------- demo


def test_demo_narrates_every_step_offline_in_under_ten_seconds(qts: QTS) -> None:
    result = qts.run("demo", env=qts.env())

    assert result.returncode == 0, result
    assert result.seconds < 10, result
    assert [line.split()[0] for line in result.stdout_lines] == DEMO_STEPS, result
    summary = result.stdout_lines[-1]
    assert "orders sent 0" in summary
    assert "OK" in summary
    assert "127.0.0.1" in result.stdout
    assert REAL_MARKER not in result.stdout + result.stderr
    assert without_host_note(result.stderr) == ""


def test_demo_json_is_one_object_with_ok_true(qts: QTS) -> None:
    result = qts.run("demo", "--json", env=qts.env())

    assert result.returncode == 0, result
    payload = json.loads(result.stdout)
    assert payload["ok"] is True
    assert payload["mode"] == "VTS"
    assert [s["step"] for s in payload["steps"]] == DEMO_STEPS[:-1]
    assert payload["emulator"]["orders_attempted"] == 0


def test_demo_in_real_mode_carries_the_real_marker(qts: QTS) -> None:
    result = qts.run("--mode", "REAL", "demo", env=qts.env())

    assert result.returncode == 0, result
    assert result.stdout_lines[0].startswith(REAL_MARKER), result
    assert "KIS_MODE=REAL" in result.stdout


# --------------------------------------------------------------------------- token


def test_token_shows_mode_source_kst_expiry_and_the_masked_token(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, http: urllib3.PoolManager
) -> None:
    emulator = emulators.start("VTS")
    result = qts.run("token", env=qts.env(emulator, vts_account))

    assert result.returncode == 0, result
    assert field(result, "mode").startswith("VTS (key "), result
    assert field(result, "source") == "issued"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d KST \(23h 5\dm left\)", field(result, "expires"))
    masked = field(result, "token")
    assert MASKED.match(masked), masked
    raw = issued_token(EmulatorClient(http, emulator, vts_account))
    assert raw not in result.stdout
    assert masked == f"{raw[:4]}…{raw[-4:]}({len(raw)} chars)"
    assert vts_account.app_key not in result.stdout  # only its fingerprint
    assert without_host_note(result.stderr) == ""


def test_token_reveal_prints_only_a_raw_token_that_kis_accepts(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, http: urllib3.PoolManager
) -> None:
    emulator = emulators.start("VTS")
    result = qts.run("token", "--reveal", env=qts.env(emulator, vts_account), token_on_stdout=True)

    assert result.returncode == 0, result
    assert len(result.stdout_lines) == 1, result
    token = result.stdout_lines[0]
    assert FULL_TOKEN.fullmatch(token), result
    status, body = EmulatorClient(http, emulator, vts_account).price(token)
    assert status == 200, body
    assert body["rt_cd"] == "0"
    assert body["output"]["stck_prpr"].isdigit()


def test_token_json_is_json_without_the_raw_token(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, http: urllib3.PoolManager
) -> None:
    emulator = emulators.start("VTS")
    result = qts.run("token", "--json", env=qts.env(emulator, vts_account))

    assert result.returncode == 0, result
    payload = json.loads(result.stdout)
    assert payload["mode"] == "VTS"
    assert payload["source"] == "issued"
    assert 23 * 3600 < payload["seconds_left"] <= 24 * 3600
    assert MASKED.match(payload["token"]), payload
    assert issued_token(EmulatorClient(http, emulator, vts_account)) not in result.stdout


@pytest.mark.parametrize("machine_flag", ["--reveal", "--json"])
def test_real_mode_marker_goes_to_stderr_when_stdout_is_for_machines(
    qts: QTS, emulators: Emulators, real_account: EmulatorAccount, machine_flag: str
) -> None:
    emulator = emulators.start("REAL")
    result = qts.run(
        "token",
        machine_flag,
        env=qts.env(emulator, real_account),
        token_on_stdout=machine_flag == "--reveal",
    )

    assert result.returncode == 0, result
    assert REAL_MARKER in result.stderr
    assert REAL_MARKER not in result.stdout
    if machine_flag == "--json":
        assert json.loads(result.stdout)["mode"] == "REAL"
    else:
        assert len(result.stdout_lines) == 1
        assert FULL_TOKEN.fullmatch(result.stdout_lines[0])


def test_real_mode_human_output_starts_with_the_marker(
    qts: QTS, emulators: Emulators, real_account: EmulatorAccount
) -> None:
    emulator = emulators.start("REAL")
    result = qts.run("token", env=qts.env(emulator, real_account))

    assert result.returncode == 0, result
    assert result.stdout_lines[0].startswith(REAL_MARKER), result
    assert field(result, "mode").startswith("REAL ")


# --------------------------------------------------------------------------- status, quote, revoke


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["text", "json"])
def test_status_needs_no_keys_and_no_network(qts: QTS, emulators: Emulators, extra: list[str]) -> None:
    # A base URL but no keys at all: status must neither ask for keys nor touch the host.
    result = qts.run("status", *extra, env=qts.env(KIS_VTS_BASE_URL=emulators.start("VTS").base_url))

    assert result.returncode == 0, result
    assert result.stderr == "", result
    if extra:
        payload = json.loads(result.stdout)
        assert payload["store"].startswith("file:")
        assert payload["tokens"] == []
    else:
        assert field(result, "store").startswith("file:")
        assert "no cached tokens" in result.stdout


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["text", "json"])
def test_status_lists_the_stored_token_masked_without_keys_or_network(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, extra: list[str]
) -> None:
    emulator = emulators.start("VTS")
    issued = qts.run("--json", "token", env=qts.env(emulator, vts_account))
    assert issued.returncode == 0, issued
    before = emulator.counters()["requests_by_endpoint"]

    result = qts.run("status", *extra, env=qts.env(KIS_VTS_BASE_URL=emulator.base_url))

    assert result.returncode == 0, result
    assert emulator.counters()["requests_by_endpoint"] == before
    token = json.loads(issued.stdout)
    if extra:
        (row,) = json.loads(result.stdout)["tokens"]
        assert row["mode"] == "VTS"
        assert row["key_fingerprint"] == token["key_fingerprint"]
        assert row["token"] == token["token"]
    else:
        (line,) = [line for line in result.stdout_lines if line.startswith("VTS ")]
        assert token["key_fingerprint"] in line
        assert line.endswith(token["token"])


def test_second_token_comes_from_the_store_without_a_tokenp(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = qts.env(emulator, vts_account)

    first, second = qts.run("token", env=env), qts.run("token", env=env)

    assert (first.returncode, second.returncode) == (0, 0), (first, second)
    assert field(first, "source") == "issued"
    assert field(second, "source") == "cache"
    assert field(second, "token") == field(first, "token")
    assert requests_to(emulator, TOKEN_PATH) == 1
    assert without_host_note(second.stderr) == "", (
        second
    )  # no wait for the issuance window: nothing was issued


def test_quote_prints_the_price_kis_reports(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, http: urllib3.PoolManager
) -> None:
    emulator = emulators.start("VTS")
    result = qts.run("quote", "005930", env=qts.env(emulator, vts_account))

    assert result.returncode == 0, result
    client = EmulatorClient(http, emulator, vts_account)
    emulator.advance(1)  # the per-second call window
    _, body = client.price(issued_token(client))
    price = int(body["output"]["stck_prpr"])
    assert result.stdout_lines[0].startswith(f"005930  {price:,} KRW"), result
    assert emulator.counters()["orders_attempted"] == 0


def test_quote_json_carries_the_kis_output(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    result = qts.run("--json", "quote", "005930", env=qts.env(emulator, vts_account))

    assert result.returncode == 0, result
    payload = json.loads(result.stdout)
    assert payload["code"] == "005930"
    assert payload["tr_id"] == PRICE_TR_ID
    assert payload["output"]["stck_prpr"].isdigit()


def test_revoke_revokes_the_token_at_kis(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = qts.env(emulator, vts_account)
    issued = qts.run("token", env=env)
    assert issued.returncode == 0, issued
    emulator.advance(61)  # one tokenP per minute per key, should revoke need one

    result = qts.run("revoke", env=env)

    assert result.returncode == 0, result
    assert requests_to(emulator, "/oauth2/revokeP") == 1, f"no revokeP reached KIS:\n{result}"
    assert result.stdout.startswith("revoked "), result


# --------------------------------------------------------------------------- options


def env_file_setup(qts: QTS, emulator: KISEmulator, account: EmulatorAccount) -> tuple[dict[str, str], str]:
    # Not named .env and not in the working directory: only --env-file can find it.
    path = qts.tmp_path / "conf" / "settings.env"
    path.parent.mkdir(exist_ok=True)
    lines = [f"{k}={v}" for k, v in qts.env(emulator, account).items() if k.startswith("KIS_")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return qts.env(), str(path)


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize("option", ["--json", "--env-file", "--mode"])
def test_options_work_before_or_after_the_subcommand(
    qts: QTS,
    emulators: Emulators,
    vts_account: EmulatorAccount,
    real_account: EmulatorAccount,
    option: str,
    before: bool,
) -> None:
    if option == "--json":
        emulator = emulators.start("VTS")
        env, opts = qts.env(emulator, vts_account), ["--json"]
    elif option == "--env-file":
        emulator = emulators.start("VTS")
        env, path = env_file_setup(qts, emulator, vts_account)
        opts = ["--env-file", path]
    else:
        emulator = emulators.start("REAL")
        # KIS_MODE says VTS (and has no VTS keys); --mode real must win.
        env = qts.env(emulator, real_account, mode="VTS")
        opts = ["--mode", "REAL" if before else "real"]
    args = [*opts, "token"] if before else ["token", *opts]

    result = qts.run(*args, env=env)

    assert result.returncode == 0, result
    assert requests_to(emulator, TOKEN_PATH) == 1
    if option == "--json":
        assert json.loads(result.stdout)["mode"] == "VTS"
    elif option == "--env-file":
        assert field(result, "mode").startswith("VTS ")
    else:
        assert result.stdout_lines[0].startswith(REAL_MARKER), result
        assert field(result, "mode").startswith("REAL ")


# --------------------------------------------------------------------------- errors


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert isinstance(port, int)
        return port


@dataclass(frozen=True)
class Setup:
    """What an error case may use to build its environment."""

    qts: QTS
    emulators: Emulators
    vts: EmulatorAccount


@dataclass(frozen=True)
class ErrorCase:
    name: str
    args: tuple[str, ...]
    exit_code: int
    mentions: str
    env: Callable[[Setup], dict[str, str]]


def _paper(s: Setup) -> dict[str, str]:
    return s.qts.env(s.emulators.start("VTS"), s.vts, mode="PAPER")


def _missing_key(s: Setup) -> dict[str, str]:
    env = s.qts.env(s.emulators.start("VTS"), s.vts)
    del env["KIS_VTS_APP_KEY"]
    return env


def _plain(s: Setup) -> dict[str, str]:
    return s.qts.env(s.emulators.start("VTS"), s.vts)


def _wrong_secret(s: Setup) -> dict[str, str]:
    emulator = s.emulators.start("VTS", accounts=[DEMO_VTS_ACCOUNT])
    return s.qts.env(emulator, KIS_VTS_APP_KEY=DEMO_VTS_APP_KEY, KIS_VTS_APP_SECRET=secrets.token_hex(90))


def _vts_key_on_real_host(s: Setup) -> dict[str, str]:
    emulator = s.emulators.start("REAL", accounts=default_accounts())
    return s.qts.env(emulator, KIS_REAL_APP_KEY=DEMO_VTS_APP_KEY, KIS_REAL_APP_SECRET=DEMO_VTS_APP_SECRET)


def _refused(s: Setup) -> dict[str, str]:
    env = s.qts.env(None, s.vts, mode="VTS")
    env["KIS_VTS_BASE_URL"] = f"http://127.0.0.1:{closed_port()}"
    return env


def _faulty(kind: str, **params: str | int) -> Callable[[Setup], dict[str, str]]:
    def setup(s: Setup) -> dict[str, str]:
        emulator = s.emulators.start("VTS")
        # Enough faults for both processes and any retry: no tokenP may succeed.
        emulator.inject_fault(kind, count=10, path=TOKEN_PATH, **params)
        return s.qts.env(emulator, s.vts, QTS_WAIT_ON_RATE_LIMIT="false", QTS_TOKEN_STORE="memory")

    return setup


ERROR_CASES = [
    ErrorCase("KIS_MODE=PAPER", ("token",), 2, "KIS_MODE", _paper),
    ErrorCase("missing app key", ("token",), 2, "KIS_VTS_APP_KEY", _missing_key),
    ErrorCase("not a stock code", ("quote", "ABC"), 2, "'ABC'", _plain),
    ErrorCase("wrong app secret", ("token",), 3, "EGW00105", _wrong_secret),
    ErrorCase("VTS key on the REAL host", ("token",), 3, "EGW02004", _vts_key_on_real_host),
    ErrorCase("connection refused", ("token",), 4, "refused", _refused),
    ErrorCase("HTML 502 on tokenP", ("token",), 4, "", _faulty("html_502")),
    ErrorCase("malformed JSON on tokenP", ("token",), 4, "", _faulty("malformed_json")),
    ErrorCase(
        "EGW00133 on tokenP",
        ("token",),
        5,
        "EGW00133",
        _faulty("error_code", msg_cd="EGW00133", status=403),
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
def test_errors_exit_with_their_code_in_two_lines_and_a_traceback_only_with_v(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, case: ErrorCase
) -> None:
    env = case.env(Setup(qts, emulators, vts_account))

    # Each process its own token folder: the file store's tokenP ledger must not make one wait for the other.
    verbose_env = {**env, "XDG_CACHE_HOME": str(qts.tmp_path / "cache-verbose")}
    plain, verbose = qts.run_all((case.args, env), (("-v", *case.args), verbose_env))

    assert plain.returncode == case.exit_code, plain
    # Nothing on stdout but, in REAL mode, the marker printed before anything was sent.
    assert [line for line in plain.stdout_lines if not line.startswith(REAL_MARKER)] == [], plain
    # The emulator is not KIS's official host: at most one note says so first, then the error's two lines.
    notes = [line for line in plain.stderr_lines if line.startswith("qts: note: ")]
    errors = [line for line in plain.stderr_lines if not line.startswith("qts: note: ")]
    assert len(notes) <= 1, plain  # none when the command stops before building a runtime
    assert all("official host" in note for note in notes), plain
    assert 1 <= len(errors) <= 2, plain
    assert errors[0].startswith("qts: "), plain
    assert case.mentions in errors[0], plain
    assert "Traceback" not in plain.stderr, plain
    assert verbose.returncode == case.exit_code, verbose
    assert "Traceback (most recent call last)" in verbose.stderr, verbose


@pytest.mark.parametrize(
    "args",
    [("bogus",), ("quote",), ("--mode", "PAPER", "token"), ("token", "--no-such-option")],
    ids=["unknown subcommand", "missing argument", "bad --mode", "unknown option"],
)
def test_usage_errors_exit_2_in_two_lines(qts: QTS, args: tuple[str, ...]) -> None:
    result = qts.run(*args, env=qts.env())

    assert result.returncode == 2, result
    assert result.stdout == "", result
    assert "Traceback" not in result.stderr
    assert result.stderr_lines[0].startswith("qts: "), result
    assert "--help" in result.stderr_lines[-1], result  # says what to do next
    assert len(result.stderr_lines) <= 2, f"usage error longer than 2 lines:\n{result}"


def test_no_subcommand_prints_usage_and_exits_2(qts: QTS) -> None:
    result = qts.run(env=qts.env())

    assert result.returncode == 2, result
    assert result.stderr.startswith("usage: qts"), result
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- emulator


def test_emulator_serves_until_ctrl_c_and_prints_env_lines(
    qts: QTS, tmp_path: Path, http: urllib3.PoolManager
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "emulator", "--port", "0"],
        env=qts.env(),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while not any(line.startswith("KIS_VTS_APP_SECRET=") for line in seen):
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, f"qts emulator ended early: {seen}"
            seen.append(line)
        found = re.search(r"http://127\.0\.0\.1:\d+", seen[0])
        assert found, seen
        base_url = found.group(0)
        assert "KIS_MODE=VTS" in seen
        assert f"KIS_VTS_BASE_URL={base_url}" in seen
        ws_url = re.search(r"ws://127\.0\.0\.1:\d+", seen[0])
        assert ws_url, seen
        assert f"KIS_VTS_WS_URL={ws_url.group(0)}" in seen  # the real-time host is served too
        assert f"KIS_VTS_APP_KEY={DEMO_VTS_APP_KEY}" in seen
        # The public demo secret is printed on purpose (it is a .env line for the emulator).
        assert f"KIS_VTS_APP_SECRET={DEMO_VTS_APP_SECRET}" in seen

        reply = http.request(
            "POST",
            base_url + TOKEN_PATH,
            json={
                "grant_type": "client_credentials",
                "appkey": DEMO_VTS_APP_KEY,
                "appsecret": DEMO_VTS_APP_SECRET,
            },
        )
        assert reply.status == 200, reply.data
        assert reply.json()["token_type"] == "Bearer"

        stopped_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        returncode = process.wait(timeout=5)
        assert time.monotonic() - stopped_at < 5
        assert returncode == 0
        assert process.stderr is not None
        stderr = process.stderr.read()
        assert "Traceback" not in stderr
        assert not FULL_TOKEN.search(stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
