"""``tokens()`` over hundreds of scopes, file store and a real redis-server: every good token,
in scope order, and every bad entry skipped with a warning that never shows a token."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from runtime.auth.stores.document import MAX_DOCUMENT_BYTES
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.redis import RedisTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.clock import SystemClock
from tests.support.redis import SKIP_REASON

MANY = 300  # more than one Redis pipeline batch (256)
ISSUED = datetime.now(UTC).replace(microsecond=0)


def _scope(i: int) -> BrokerScope:
    return BrokerScope(Mode.REAL if i % 3 == 0 else Mode.VTS, f"{i * 7919:012x}")


def _token(scope: BrokerScope, i: int) -> AccessToken:
    return AccessToken(
        value=f"opaque-listing-token-{i:05d}-{'x' * 20}",
        token_type="Bearer",
        expires_at=ISSUED + timedelta(hours=24),
        issued_at=ISSUED,
        scope=scope,
    )


def _expected() -> list[AccessToken]:
    tokens = [_token(_scope(i), i) for i in range(MANY)]
    return sorted(tokens, key=lambda token: token.scope)


def _no_token_in(text: str) -> None:
    assert "opaque-listing-token" not in text


def test_the_file_store_lists_hundreds_and_skips_each_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "tokens"
    store = FileTokenStore(folder)
    for i in range(MANY):
        store.save(_scope(i), _token(_scope(i), i))
    (folder / "VTS-00000000000a.json").write_text("{not json")
    (folder / "VTS-00000000000b.json").write_bytes(b" " * (MAX_DOCUMENT_BYTES + 10))
    (folder / "VTS-00000000000c.json").symlink_to(store.path_for(_scope(1)))
    stranger = json.loads(store.path_for(_scope(1)).read_text())  # another scope's document
    (folder / "VTS-00000000000d.json").write_text(json.dumps(stranger))
    for path in folder.glob("VTS-00000000000?.json"):
        if not path.is_symlink():
            path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        listed = store.tokens()
    assert listed == _expected()
    assert caplog.text.count("ignoring token file") == 4
    _no_token_in(caplog.text)


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[tuple[RedisTokenStore, redis.Redis]]:
    if shutil.which("redis-server") is None:
        pytest.skip(SKIP_REASON)
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0)
    client.flushdb()
    try:
        yield RedisTokenStore.from_url(redis_url, SystemClock()), client
    finally:
        client.flushdb()
        client.close()


def test_the_redis_store_lists_hundreds_in_batches_and_skips_each_bad_value(
    redis_store: tuple[RedisTokenStore, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    store, client = redis_store
    for i in range(MANY):
        store.save(_scope(i), _token(_scope(i), i))
    client.rpush("qts:token:VTS:00000000000a", "a list, not a string")  # WRONGTYPE for GETRANGE
    client.set("qts:token:VTS:00000000000b", b"{" * (MAX_DOCUMENT_BYTES + 10))
    client.set("qts:token:VTS:00000000000c", b"{not json")
    client.set("qts:token:VTS:00000000000d", client.get(f"qts:token:VTS:{_scope(1).key_fingerprint}") or b"")
    client.set("qts:token:VTS:not-a-scope", b"{}")  # not our key name: never read
    client.set("qts:ledger:VTS:00000000000e", b"{}")  # another kind of key
    with caplog.at_level(logging.WARNING):
        listed = store.tokens()
    assert listed == _expected()
    assert caplog.text.count("ignoring Redis key") == 4
    assert "not a string value" in caplog.text
    _no_token_in(caplog.text)


def test_one_token_loads_as_before_from_redis(redis_store: tuple[RedisTokenStore, redis.Redis]) -> None:
    store, client = redis_store
    store.save(_scope(1), _token(_scope(1), 1))
    assert store.load(_scope(1)) == _token(_scope(1), 1)
    client.rpush(f"qts:token:VTS:{_scope(2).key_fingerprint}", "x")
    assert store.load(_scope(2)) is None
