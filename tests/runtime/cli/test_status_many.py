"""``qts status`` over many stored keys (file store and a real redis-server): the same fields and
lines as for one, every key in order, bad entries skipped with a warning, and the file store's
leftover lock files removed (a held one kept)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import filelock
import pytest
import redis

from runtime.auth.call_budget.file import FileCallBudget
from runtime.auth.ports import CallBudgetPort, TokenStorePort
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.redis import RedisTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from tests.support.cli import QTS, REAL_MARKER
from tests.support.redis import SKIP_REASON, redis_server

CLOCK = SystemClock()
KEYS = 24
SCOPES = [BrokerScope(Mode.REAL if i % 4 else Mode.VTS, f"{i * 104729:012x}") for i in range(KEYS)]
BOOKED = SCOPES[::2]
ROW_FIELDS = {"mode", "key_fingerprint", "expires_at", "seconds_left", "token", "budget"}
BUDGET_FIELDS = {"limit_per_s", "used_last_s", "queue", "queue_s", "slowed"}


def _jwt(i: int) -> str:
    """A token in KIS's shape (a JWT without a jti claim), so the leak check would see it whole."""
    part = base64.urlsafe_b64encode(json.dumps({"sub": f"status-many-{i}", "n": "x" * 40}).encode()).decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{part.rstrip('=')}.{'s' * 43}"


def _fill(store: TokenStorePort, budget: CallBudgetPort) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for i, scope in enumerate(SCOPES):
        token = AccessToken(
            value=_jwt(i),
            token_type="Bearer",
            expires_at=now + timedelta(hours=20),
            issued_at=now - timedelta(hours=4),
            scope=scope,
        )
        store.save(scope, token)
    for scope in BOOKED:
        budget.acquire(scope, Deadline.after(CLOCK, 10.0))


def _check_json(stdout: str) -> None:
    rows = json.loads(stdout)["tokens"]
    listed = [(r["mode"], r["key_fingerprint"]) for r in rows]
    assert listed == sorted((s.mode.value, s.key_fingerprint) for s in SCOPES)
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert "…" in row["token"]
        assert 0 < row["seconds_left"] <= 20 * 3600
        booked = BrokerScope(Mode(row["mode"]), row["key_fingerprint"]) in BOOKED
        assert (row["budget"] is not None) == booked
        if booked:
            assert set(row["budget"]) == BUDGET_FIELDS
            assert row["budget"]["used_last_s"] in (0, 1)  # booked just now, or a second ago


def _check_text(stdout: str) -> None:
    lines = stdout.splitlines()
    assert lines[0].startswith("store    ")
    rows, budgets = lines[1::2], lines[2::2]
    assert len(rows) == len(budgets) == KEYS
    assert sum(REAL_MARKER in row for row in rows) == sum(s.mode is Mode.REAL for s in SCOPES)
    assert all(line.strip().startswith("budget") for line in budgets)
    assert sum("no calls booked yet" in line for line in budgets) == KEYS - len(BOOKED)


def test_status_over_many_keys_in_the_file_store(qts: QTS, tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    store = FileTokenStore(folder)
    _fill(store, FileCallBudget(folder, CLOCK, 2.0))
    for scope in SCOPES:  # locks left by an older version (filelock keeps its files)
        filelock.FileLock(store.path_for(scope).with_suffix(".lock")).acquire().lock.release()
    (folder / "VTS-00000000abcd.json").write_text("{not json")
    (folder / "VTS-00000000abcd.json").chmod(0o600)
    held = filelock.FileLock(store.path_for(SCOPES[1]).with_suffix(".lock"), thread_local=False)
    env = qts.env(QTS_TOKEN_STORE=f"file:{folder}")
    with held:  # another process holds one scope's lock meanwhile
        as_json = qts.run("--json", "status", env=env)
        text = qts.run("status", env=env)
    for result in (as_json, text):
        assert result.returncode == 0, result
        assert "Traceback" not in result.stderr
        assert "ignoring token file" in result.stderr
    _check_json(as_json.stdout)
    _check_text(text.stdout)
    locks = sorted(p.name for p in folder.glob("*.lock") if not p.name.endswith(".budget.json.lock"))
    assert locks == [store.path_for(SCOPES[1]).with_suffix(".lock").name]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip(SKIP_REASON)
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def test_status_over_many_keys_in_redis(qts: QTS, redis_url: str) -> None:
    from runtime.auth.call_budget.redis import RedisCallBudget

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    _fill(RedisTokenStore.from_url(redis_url, CLOCK), RedisCallBudget.from_url(redis_url, CLOCK, 2.0))
    client.rpush("qts:token:VTS:00000000abcd", "not a string value")
    env = qts.env(QTS_TOKEN_STORE=redis_url)
    as_json = qts.run("--json", "status", env=env)
    text = qts.run("status", env=env)
    client.flushdb()
    for result in (as_json, text):
        assert result.returncode == 0, result
        assert "Traceback" not in result.stderr
        assert "not a string value" in result.stderr
    _check_json(as_json.stdout)
    _check_text(text.stdout)
