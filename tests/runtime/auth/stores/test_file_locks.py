"""The file store's issuance lock leaves no lock file behind, and the sweep in ``tokens()`` removes
leftovers without ever breaking the lock: real processes, real files, real ``flock``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import filelock
import pytest

from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.errors import TokenStoreError

SCOPE = BrokerScope(Mode.VTS, "0123456789ab")
TIMEOUT_S = 120
SRC = str(Path(__file__).resolve().parents[4] / "src")

# Holds the scope's lock until stdin closes (or forever, to be killed): prints "held" once it has it.
_HOLDER = """
import sys
from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import BrokerScope, Mode
store = FileTokenStore(sys.argv[1])
with store.issuance_lock(BrokerScope(Mode.VTS, "0123456789ab"), 30.0):
    print("held", flush=True)
    sys.stdin.read()
"""

# Takes the lock N times; inside, proves it is alone (O_EXCL marker) and bumps a plain counter file.
_WORKER = """
import os, sys
from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import BrokerScope, Mode
folder, rounds = sys.argv[1], int(sys.argv[2])
store = FileTokenStore(folder)
scope = BrokerScope(Mode.VTS, "0123456789ab")
for _ in range(rounds):
    with store.issuance_lock(scope, 60.0):
        marker = os.open(os.path.join(folder, "inside"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(marker)
        counter = os.path.join(folder, "counter")
        value = int(open(counter).read() or 0) if os.path.exists(counter) else 0
        os.sched_yield()
        with open(counter, "w") as handle:
            handle.write(str(value + 1))
        os.unlink(os.path.join(folder, "inside"))
"""

# Sweeps the folder as fast as it can until a file named "stop" appears; prints how many it removed.
_SWEEPER = """
import os, sys
from runtime.auth.stores.file import FileTokenStore, _sweep_lock
folder = sys.argv[1]
store = FileTokenStore(folder)
lock = os.path.join(folder, "VTS-0123456789ab.lock")
removed = 0
while not os.path.exists(os.path.join(folder, "stop")):
    store.tokens()
    removed += _sweep_lock(__import__("pathlib").Path(lock))
print(removed, flush=True)
"""


def _child(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(  # noqa: S603 - this interpreter and a fixed script
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held_by_child(folder: Path) -> subprocess.Popen[str]:
    child = _child(_HOLDER, str(folder))
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held", child.stderr.read() if child.stderr else ""
    return child


def _token() -> AccessToken:
    issued = datetime(2026, 3, 2, tzinfo=UTC)
    return AccessToken(
        value="opaque-test-token-value",
        token_type="Bearer",
        expires_at=issued + timedelta(hours=24),
        issued_at=issued,
        scope=SCOPE,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.mkdir(mode=0o700)
    return path


def lock_file(folder: Path) -> Path:
    return folder / f"VTS-{SCOPE.key_fingerprint}.lock"


def test_the_lock_file_exists_only_while_the_lock_is_held(folder: Path) -> None:
    store = FileTokenStore(folder)
    with store.issuance_lock(SCOPE, 1.0):
        assert lock_file(folder).is_file()
        with store.issuance_lock(SCOPE, 1.0):  # reentrant within the thread
            store.save(SCOPE, _token())  # save takes it again, inside
        assert lock_file(folder).is_file()  # still held by the outer block
    assert not lock_file(folder).exists()
    assert sorted(p.name for p in folder.iterdir()) == [f"VTS-{SCOPE.key_fingerprint}.json"]


def test_another_thread_waits_and_times_out_typed(folder: Path) -> None:
    store = FileTokenStore(folder)
    errors: list[BaseException] = []

    def contender() -> None:
        try:
            with store.issuance_lock(SCOPE, 0.2):
                pass
        except TokenStoreError as exc:
            errors.append(exc)

    with store.issuance_lock(SCOPE, 1.0):
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join(10)
    assert len(errors) == 1
    with store.issuance_lock(SCOPE, 1.0):  # free again once released
        pass


def test_a_lock_held_by_another_process_is_neither_swept_nor_taken(folder: Path) -> None:
    holder = _held_by_child(folder)
    try:
        store = FileTokenStore(folder)
        assert store.tokens() == []  # sweeps: must leave the held file alone
        assert lock_file(folder).is_file()
        with pytest.raises(TokenStoreError), store.issuance_lock(SCOPE, 0.3):
            pass
    finally:
        holder.communicate(timeout=TIMEOUT_S)  # closes its stdin: it releases and exits
    assert holder.returncode == 0
    assert not lock_file(folder).exists()  # the holder removed it on release
    with FileTokenStore(folder).issuance_lock(SCOPE, 1.0):
        pass


def test_a_killed_holder_leaves_a_file_that_the_next_listing_removes(folder: Path) -> None:
    holder = _held_by_child(folder)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=TIMEOUT_S)
    assert lock_file(folder).is_file()  # nobody released it
    store = FileTokenStore(folder)
    store.save(SCOPE, _token())
    assert store.tokens() == [_token()]
    assert sorted(p.name for p in folder.iterdir()) == [f"VTS-{SCOPE.key_fingerprint}.json"]


def test_leftovers_of_filelock_are_swept_but_a_filelock_holder_is_respected(folder: Path) -> None:
    other = filelock.FileLock(lock_file(folder), thread_local=False)
    store = FileTokenStore(folder)
    with other:  # an older version (filelock) holds it
        store.tokens()
        assert lock_file(folder).is_file()
        with pytest.raises(TokenStoreError), store.issuance_lock(SCOPE, 0.2):
            pass
    assert lock_file(folder).is_file()  # filelock 4 leaves its file behind
    store.tokens()
    assert not lock_file(folder).exists()


def test_the_sweep_follows_no_link_and_opens_no_fifo(folder: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = folder / "VTS-aaaaaaaaaaaa.lock"
    link.symlink_to(victim)
    fifo = folder / "VTS-bbbbbbbbbbbb.lock"
    os.mkfifo(fifo, 0o600)
    started = time.monotonic()
    assert FileTokenStore(folder).tokens() == []
    assert time.monotonic() - started < 5
    assert victim.read_text() == "precious"
    assert link.is_symlink()
    assert fifo.exists()


def test_processes_taking_the_lock_while_another_sweeps_are_never_two_at_once(folder: Path) -> None:
    """Three processes bump a plain counter under the lock while a fourth sweeps without pause:
    a sweep that broke the lock would show as a second holder inside (O_EXCL marker) or a lost bump."""
    rounds = 120
    sweeper = _child(_SWEEPER, str(folder))
    workers = [_child(_WORKER, str(folder), str(rounds)) for _ in range(3)]
    try:
        for worker in workers:
            _out, err = worker.communicate(timeout=TIMEOUT_S)
            assert worker.returncode == 0, err[-2000:]
    finally:
        (folder / "stop").touch()
        out, err = sweeper.communicate(timeout=TIMEOUT_S)
    assert sweeper.returncode == 0, err[-2000:]
    assert int((folder / "counter").read_text()) == 3 * rounds
    assert not (folder / "inside").exists()
    assert not lock_file(folder).exists()
    assert int(out) >= 0  # the sweeper ran (it may or may not have caught a file between holders)


# Holds the scope's stream lease until stdin closes: prints "held" once it has it.
_STREAMER = """
import sys
from datetime import UTC, datetime
from runtime.auth.ports import LeaseHolder
from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import BrokerScope, Mode
store = FileTokenStore(sys.argv[1])
lease = store.acquire_stream_lease(
    BrokerScope(Mode.VTS, "0123456789ab"), LeaseHolder(host="child", pid=7, since=datetime.now(UTC))
)
print("held", flush=True)
sys.stdin.read()
lease.release()
"""


def _stream_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".stream." in p.name)


def test_a_stream_lease_leaves_nothing_and_a_dead_ones_files_are_swept(folder: Path) -> None:
    streamer = _child(_STREAMER, str(folder))
    assert streamer.stdout is not None
    assert streamer.stdout.readline().strip() == "held"
    base = f"VTS-{SCOPE.key_fingerprint}.stream"
    FileTokenStore(folder).tokens()  # a live session's files stay
    assert _stream_files(folder) == [f"{base}.json", f"{base}.lock"]
    streamer.communicate(timeout=TIMEOUT_S)
    assert streamer.returncode == 0
    assert _stream_files(folder) == []  # released: nothing left

    streamer = _child(_STREAMER, str(folder))
    assert streamer.stdout is not None
    assert streamer.stdout.readline().strip() == "held"
    streamer.send_signal(signal.SIGKILL)
    streamer.communicate(timeout=TIMEOUT_S)
    assert _stream_files(folder) == [f"{base}.json", f"{base}.lock"]  # a dead holder's leftovers
    FileTokenStore(folder).tokens()
    assert _stream_files(folder) == []
