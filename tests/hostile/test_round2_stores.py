"""Round 2, class 3: stores anyone can poison.

Whatever sits in a token file or a Redis value -- deeply nested JSON, a 5000-digit number,
``1e999``, 128 MiB, a hash instead of a string, a token of the other mode or of another key --
is a typed miss (or a typed error), bounded in size and time. A FIFO at the token path never
blocks ``open()``. A folder owned by another user (a real second uid: 65534), or writable by
others, is refused with a clear TokenStoreError, as ssh refuses a loose ``~/.ssh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from runtime.auth.stores.document import SCHEMA_VERSION
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.redis import RedisTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.errors import TokenStoreError
from runtime.masking import fingerprint
from tests.support.kis import REAL_KEY, VTS_KEY, jwt
from tests.support.redis import RedisProcess, start_redis

VTS = BrokerScope(Mode.VTS, fingerprint(VTS_KEY))
REAL = BrokerScope(Mode.REAL, fingerprint(REAL_KEY))
NOBODY = 65534
NOW = datetime.now(UTC)


def token(scope: BrokerScope = VTS, key: str = VTS_KEY) -> AccessToken:
    return AccessToken(
        value=jwt(key, NOW),
        token_type="Bearer",
        expires_at=NOW + timedelta(hours=23),
        issued_at=NOW,
        scope=scope,
    )


def document(scope: BrokerScope, value: str) -> dict[str, object]:
    return {
        "schema": SCHEMA_VERSION,
        "scope": {"mode": scope.mode.value, "key_fingerprint": scope.key_fingerprint},
        "token": {
            "value": value,
            "token_type": "Bearer",
            "expires_at": (NOW + timedelta(hours=23)).isoformat(),
            "issued_at": NOW.isoformat(),
        },
        "last_issued_at": None,
        "blocked_until": None,
    }


def nested(depth: int) -> bytes:
    return b'{"schema": 1, "token": ' + b"[" * depth + b"]" * depth + b"}"


POISONS: dict[str, bytes] = {
    "nested 100 000 deep": nested(100_000),
    "nested 40 deep": nested(40),
    "5000-digit number": b'{"schema": ' + b"9" * 5000 + b"}",
    "5000-digit float": b'{"schema": 1.' + b"9" * 5000 + b"}",
    "1e999": b'{"schema": 1e999}',
    "NaN": b'{"schema": NaN}',
    "not UTF-8": b'{"schema": "\xff\xfe"}',
    "a JSON list": b"[1, 2, 3]",
    "truncated": json.dumps(document(VTS, token().value)).encode()[:-20],
    "other mode's token": json.dumps(document(VTS, jwt(REAL_KEY, NOW))).encode(),
    "another key's token": json.dumps(
        document(VTS, jwt("PSother0000000000000000000000000009", NOW))
    ).encode(),
}


def _bounded(action: Callable[[], object], limit_s: float = 5.0) -> object:
    """Run ``action`` on a thread; fail (instead of hanging) when it outlasts ``limit_s``."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = action()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(limit_s)
    assert not worker.is_alive(), f"still blocked after {limit_s} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")


# --- the file store ------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.mkdir(mode=0o700)
    return path


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_token_file_is_a_typed_miss(
    poison: str, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileTokenStore(folder)
    path = store.path_for(VTS)
    path.write_bytes(POISONS[poison])
    path.chmod(0o600)
    assert _bounded(lambda: store.load(VTS)) is None
    assert _bounded(store.tokens) == []
    assert "ignoring token file" in caplog.text
    fresh = token()
    store.save(VTS, fresh)  # and the store still works: the poison is replaced
    assert store.load(VTS) == fresh


def test_a_huge_token_file_is_never_read_whole(folder: Path) -> None:
    store = FileTokenStore(folder)
    path = store.path_for(VTS)
    with path.open("wb") as handle:
        handle.truncate(256 * 1024 * 1024)  # sparse: 256 MiB of size, no disk
    path.chmod(0o600)
    tracemalloc.start()
    try:
        assert store.load(VTS) is None
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_a_fifo_at_the_token_path_never_blocks(folder: Path) -> None:
    store = FileTokenStore(folder)
    os.mkfifo(store.path_for(VTS), 0o600)
    started = time.monotonic()
    assert _bounded(lambda: store.load(VTS), limit_s=3) is None
    assert _bounded(store.tokens, limit_s=3) == []
    assert _bounded(lambda: store.load_ledger(VTS), limit_s=3) is not None
    assert time.monotonic() - started < 3


def test_a_fifo_at_the_lock_path_never_blocks(folder: Path) -> None:
    store = FileTokenStore(folder)
    os.mkfifo(store.path_for(VTS).with_suffix(".lock"), 0o600)

    def use() -> None:
        with contextlib.suppress(TokenStoreError):  # refusing is fine; blocking is not
            store.save(VTS, token())

    _bounded(use, limit_s=5)


def test_a_symlink_at_the_lock_path_does_not_truncate_its_target(folder: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = FileTokenStore(folder)
    store.path_for(VTS).with_suffix(".lock").symlink_to(victim)
    with contextlib.suppress(TokenStoreError):  # refused: fine
        store.save(VTS, token())
    assert victim.read_text() == "precious"


def _needs_root() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to hand a folder to a second uid")


def test_a_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    _needs_root()
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    store = FileTokenStore(folder)
    for action in (lambda: store.load(VTS), lambda: store.save(VTS, token()), store.tokens):
        with pytest.raises(TokenStoreError, match=f"owned by uid {NOBODY}"):
            action()


def test_a_folder_created_by_a_real_second_user_is_refused() -> None:
    """uid 65534 itself creates the folder 0777 (as an attacker pre-creating ~/.cache/qts would)."""
    _needs_root()
    runner = shutil.which("setpriv")
    if runner is None:
        pytest.skip("setpriv (util-linux) is needed to run a process as a second uid")
    shared = Path(tempfile.mkdtemp(prefix="qts-shared-", dir="/tmp"))
    try:
        shared.chmod(0o1777)
        folder = shared / "qts"
        as_nobody = [runner, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        subprocess.run([*as_nobody, "mkdir", "-m", "0777", str(folder)], check=True, timeout=10)  # noqa: S603
        assert folder.stat().st_uid == NOBODY
        with pytest.raises(TokenStoreError, match="refusing token folder"):
            FileTokenStore(folder).save(VTS, token())
        with pytest.raises(TokenStoreError, match="refusing token folder"):
            FileTokenStore(folder).load(VTS)
        assert list(folder.iterdir()) == [], "nothing was written there"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_folder_writable_by_others_is_refused_even_when_ours(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(TokenStoreError, match="writable by other users"):
        FileTokenStore(folder).load(VTS)
    assert folder.stat().st_mode & 0o777 == mode, "a refused folder is not silently changed"


def test_a_folder_only_readable_by_others_is_tightened_and_used(tmp_path: Path) -> None:
    folder = tmp_path / "readable"
    folder.mkdir()
    folder.chmod(0o755)
    store = FileTokenStore(folder)
    store.save(VTS, token())
    assert folder.stat().st_mode & 0o777 == 0o700
    assert store.load(VTS) is not None


def test_qts_status_over_a_poisoned_file_exits_0(folder: Path, tmp_path: Path) -> None:
    store = FileTokenStore(folder)
    store.path_for(VTS).write_bytes(POISONS["nested 100 000 deep"])
    store.path_for(VTS).chmod(0o600)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "QTS_TOKEN_STORE": f"file:{folder}"}
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "status"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no cached tokens" in done.stdout


# --- the Redis store -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    with start_redis(tmp_path_factory.mktemp("redis-poison")) as proc:
        yield proc


@pytest.fixture
def rstore(redis_proc: RedisProcess) -> Iterator[tuple[RedisTokenStore, redis.Redis]]:
    client = redis.Redis.from_url(redis_proc.url)
    client.flushdb()
    yield RedisTokenStore.from_url(redis_proc.url, SystemClock()), client
    client.close()


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poisoned_redis_value_is_a_typed_miss(
    poison: str, rstore: tuple[RedisTokenStore, redis.Redis]
) -> None:
    store, client = rstore
    client.set(f"qts:token:VTS:{VTS.key_fingerprint}", POISONS[poison])
    client.set(f"qts:ledger:VTS:{VTS.key_fingerprint}", POISONS[poison])
    assert _bounded(lambda: store.load(VTS)) is None
    assert _bounded(store.tokens) == []
    assert _bounded(lambda: store.load_ledger(VTS)) is not None


def test_a_128_mib_redis_value_is_not_read_whole(rstore: tuple[RedisTokenStore, redis.Redis]) -> None:
    store, client = rstore
    client.setrange(f"qts:token:VTS:{VTS.key_fingerprint}", 128 * 1024 * 1024 - 1, b"x")
    tracemalloc.start()
    try:
        started = time.monotonic()
        assert store.load(VTS) is None
        elapsed = time.monotonic() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.delete(f"qts:token:VTS:{VTS.key_fingerprint}")
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
    assert elapsed < 2


def test_a_redis_key_of_another_type_is_a_miss(rstore: tuple[RedisTokenStore, redis.Redis]) -> None:
    store, client = rstore
    client.hset(f"qts:token:VTS:{VTS.key_fingerprint}", "value", "x")
    assert store.load(VTS) is None


def test_a_token_of_the_other_mode_planted_in_redis_is_never_loaded(
    rstore: tuple[RedisTokenStore, redis.Redis],
) -> None:
    store, client = rstore
    planted = token(REAL, REAL_KEY)
    # The REAL token, filed under the VTS scope by someone who can write to the Redis.
    client.set(f"qts:token:VTS:{VTS.key_fingerprint}", json.dumps(document(VTS, planted.value)))
    assert store.load(VTS) is None
    store.save(VTS, token())
    assert store.load(VTS) is not None
