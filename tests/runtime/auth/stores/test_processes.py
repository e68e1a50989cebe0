"""Real processes against the KIS emulator: one tokenP per scope, whatever the processes and restarts.

Children run ``python -m runtime.cli`` (or a few lines of Python) with XDG_CACHE_HOME in the
test's folder, so they share one FileTokenStore and nothing else.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kis_emulator import KISEmulator, demo_account
from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.masking import fingerprint
from tests.support.emulator import running_emulator
from tests.support.processes import child_env, start_at_once

TIMEOUT_S = 60
SCOPE = BrokerScope(Mode.VTS, fingerprint("PSkill-test-key"))
T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def emulator() -> Iterator[KISEmulator]:
    with running_emulator("VTS") as emu:
        yield emu


def token_requests(emulator: KISEmulator) -> int:
    count = emulator.counters()["token_requests"]
    assert isinstance(count, int)
    return count


def run_qts(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter and fixed arguments
        [sys.executable, "-m", "runtime.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_eight_processes_started_together_send_one_tokenp_and_share_the_token(
    emulator: KISEmulator, tmp_path: Path
) -> None:
    env = child_env(emulator, tmp_path / "cache")
    children = start_at_once(env, tmp_path, 8, timeout_s=TIMEOUT_S)
    outputs = [child.communicate(timeout=TIMEOUT_S) for child in children]

    assert [child.returncode for child in children] == [0] * 8, outputs
    tokens = {stdout.strip() for stdout, _stderr in outputs}
    assert len(tokens) == 1, "the processes ended with different tokens"
    assert token_requests(emulator) == 1


def test_five_restarts_reuse_the_stored_token(emulator: KISEmulator, tmp_path: Path) -> None:
    env = child_env(emulator, tmp_path / "cache")
    runs = [run_qts(env, "token", "--reveal", cwd=tmp_path) for _ in range(5)]

    assert [r.returncode for r in runs] == [0] * 5, [r.stderr for r in runs]
    assert len({r.stdout for r in runs}) == 1
    assert token_requests(emulator) == 1
    status = run_qts(env, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "VTS  key" in status.stdout
    assert token_requests(emulator) == 1  # status never touches KIS


def test_restarts_do_not_mix_modes_in_one_store_folder(tmp_path: Path) -> None:
    with running_emulator("VTS") as vts, running_emulator("REAL") as real:
        cache = tmp_path / "cache"
        real_account = demo_account("REAL")
        real_env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(tmp_path),
            "XDG_CACHE_HOME": str(cache),
            "KIS_MODE": "REAL",
            "KIS_REAL_BASE_URL": real.base_url,
            "KIS_REAL_APP_KEY": real_account.app_key,
            "KIS_REAL_APP_SECRET": real_account.app_secret,
        }
        vts_env = child_env(vts, cache)
        runs = [run_qts(e, "token", "--reveal", cwd=tmp_path) for e in (vts_env, real_env, vts_env, real_env)]
        assert [r.returncode for r in runs] == [0] * 4, [r.stderr for r in runs]
        vts_tokens = {runs[0].stdout, runs[2].stdout}
        real_tokens = {runs[1].stdout, runs[3].stdout}
        assert len(vts_tokens) == len(real_tokens) == 1
        assert vts_tokens.isdisjoint(real_tokens)
        assert token_requests(vts) == token_requests(real) == 1


def test_no_wait_mode_exits_5_with_the_time_to_wait(emulator: KISEmulator, tmp_path: Path) -> None:
    env = child_env(emulator, tmp_path / "cache", QTS_WAIT_ON_RATE_LIMIT="false")
    assert run_qts(env, "token", cwd=tmp_path).returncode == 0
    assert run_qts(env, "revoke", cwd=tmp_path).returncode == 0  # the next token needs a new tokenP

    blocked = run_qts(env, "token", cwd=tmp_path)

    assert blocked.returncode == 5, blocked.stderr
    assert "one token per minute" in blocked.stderr
    assert token_requests(emulator) == 1  # the budget said no before KIS had to


# --- a writer killed in the middle of a save ----------------------------------------------------


def stored_token(value: str) -> AccessToken:
    return AccessToken(value, "Bearer", T0 + timedelta(hours=24), T0, SCOPE)


_SAVE_THEN_HANG = textwrap.dedent(
    """
    import os, sys, time
    from datetime import UTC, datetime, timedelta
    from runtime.auth.stores.file import FileTokenStore
    from runtime.broker.base import AccessToken, BrokerScope, Mode
    scope = BrokerScope(Mode.VTS, sys.argv[2])
    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    value = "eyJnew-token-from-the-killed-writer-000000"
    token = AccessToken(value, "Bearer", t0 + timedelta(hours=24), t0, scope)
    real_fsync = os.fsync
    def stuck_fsync(fd):
        print("in-save", flush=True)  # the new bytes are in the temporary file, not yet in place
        time.sleep(600)
    os.fsync = stuck_fsync
    FileTokenStore(sys.argv[1]).save(scope, token)
    """
)


def test_a_writer_killed_mid_save_leaves_the_previous_valid_file(tmp_path: Path) -> None:
    folder = tmp_path / "qts"
    store = FileTokenStore(folder)
    previous = stored_token("eyJprevious-valid-token-0000000000000000")
    store.save(SCOPE, previous)

    with subprocess.Popen(  # noqa: S603 - this interpreter and our own script
        [sys.executable, "-c", _SAVE_THEN_HANG, str(folder), SCOPE.key_fingerprint],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "in-save"
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT_S)

    assert store.load(SCOPE) == previous
    assert store.tokens() == [previous]
    assert any(p.suffix == ".tmp" for p in folder.iterdir())  # the orphan is harmless
    store.save(SCOPE, stored_token("eyJafter-the-crash-000000000000000000000"))
    assert store.load(SCOPE) == stored_token("eyJafter-the-crash-000000000000000000000")


_SAVE_FOREVER = textwrap.dedent(
    """
    import itertools, sys
    from datetime import UTC, datetime, timedelta
    from runtime.auth.stores.file import FileTokenStore
    from runtime.auth.ports import IssuanceLedger
    from runtime.broker.base import AccessToken, BrokerScope, Mode
    scope = BrokerScope(Mode.VTS, sys.argv[2])
    name, count = sys.argv[3], int(sys.argv[4])
    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    store = FileTokenStore(sys.argv[1])
    for n in (itertools.count() if count < 0 else range(count)):
        value = f"eyJ{name}-{n:08d}-padding-padding"
        store.save(scope, AccessToken(value, "Bearer", t0 + timedelta(hours=24), t0, scope))
        store.save_ledger(scope, IssuanceLedger(last_issued_at=t0 + timedelta(seconds=n)))
    """
)


def _writer(folder: Path, name: str, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - this interpreter and our own script
        [sys.executable, "-c", _SAVE_FOREVER, str(folder), SCOPE.key_fingerprint, name, str(count)]
    )


def test_writers_killed_at_random_moments_never_leave_a_bad_file(tmp_path: Path) -> None:
    folder = tmp_path / "qts"
    store = FileTokenStore(folder)
    store.save(SCOPE, stored_token("eyJfirst-valid-token-00000000000000000000"))
    rng = random.Random(20260302)  # noqa: S311 - timing jitter, not cryptography
    for round_ in range(6):
        child = _writer(folder, f"round{round_}", -1)
        time.sleep(0.3 + rng.random() * 0.3)  # past the interpreter start, into the save loop
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT_S)
        loaded = store.load(SCOPE)
        assert loaded is not None, f"round {round_}: the file was left unreadable"
        assert loaded.scope == SCOPE


def test_concurrent_writers_and_a_reader_always_see_a_whole_file(tmp_path: Path) -> None:
    folder = tmp_path / "qts"
    store = FileTokenStore(folder)
    store.save(SCOPE, stored_token("eyJseed-token-000000000000000000000000000"))
    writers = [_writer(folder, f"w{i}", 60) for i in range(4)]
    misses: list[int] = []
    reads = 0
    stop = threading.Event()

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            reads += 1
            if store.load(SCOPE) is None:
                misses.append(reads)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        codes = [w.wait(TIMEOUT_S) for w in writers]
    finally:
        stop.set()
        reader.join(10)

    assert codes == [0] * 4
    assert misses == [], f"{len(misses)} of {reads} reads found no whole file"
    final = store.load(SCOPE)
    assert final is not None
    assert final.value.endswith("-00000059-padding-padding")
    ledger = store.load_ledger(SCOPE)
    assert ledger.last_issued_at == T0 + timedelta(seconds=59)
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]
