"""FileTokenStore on disk: private permissions, atomic files, and every bad file a miss with a warning."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.auth.ports import IssuanceLedger
from runtime.auth.stores.file import FileTokenStore
from runtime.bootstrap import build_store
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.config import load_settings
from runtime.errors import TokenStoreError
from runtime.masking import fingerprint
from runtime.settings import StoreKind, TokenStoreSpec

VTS = BrokerScope(Mode.VTS, fingerprint("PSvts-file-store"))
REAL = BrokerScope(Mode.REAL, fingerprint("PSreal-file-store"))
T0 = datetime(2026, 3, 2, tzinfo=UTC)
VALUE = "eyJfile-store-token-value-0123456789abcdef"


def token(scope: BrokerScope = VTS, value: str = VALUE) -> AccessToken:
    return AccessToken(value, "Bearer", T0 + timedelta(hours=24), T0, scope)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "qts"


@pytest.fixture
def store(folder: Path) -> FileTokenStore:
    return FileTokenStore(folder)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_0600_and_the_folder_0700_whatever_the_umask(store: FileTokenStore, folder: Path) -> None:
    old = os.umask(0o000)
    try:
        store.save(VTS, token())
        with store.issuance_lock(VTS, 1.0):
            lock_file = folder / f"VTS-{VTS.key_fingerprint}.lock"
            assert mode_of(lock_file) == 0o600
    finally:
        os.umask(old)
    assert mode_of(folder) == 0o700
    assert mode_of(store.path_for(VTS)) == 0o600
    assert [p.name for p in folder.iterdir() if p.suffix == ".tmp"] == []


def test_a_folder_open_to_others_is_tightened(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    FileTokenStore(folder).save(VTS, token())
    assert mode_of(folder) == 0o700
    assert "tightened" in caplog.text


def test_the_file_has_the_documented_schema(store: FileTokenStore) -> None:
    store.save(VTS, token())
    store.save_ledger(VTS, IssuanceLedger(last_issued_at=T0))
    data = json.loads(store.path_for(VTS).read_text())
    assert data == {
        "schema": 1,
        "scope": {"mode": "VTS", "key_fingerprint": VTS.key_fingerprint},
        "token": {
            "value": VALUE,
            "token_type": "Bearer",
            "expires_at": (T0 + timedelta(hours=24)).isoformat(),
            "issued_at": T0.isoformat(),
        },
        "last_issued_at": T0.isoformat(),
        "blocked_until": None,
    }


def _document(scope: BrokerScope = VTS, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "schema": 1,
        "scope": {"mode": scope.mode.value, "key_fingerprint": scope.key_fingerprint},
        "token": {
            "value": VALUE,
            "token_type": "Bearer",
            "expires_at": "2026-03-03T00:00:00+00:00",
            "issued_at": "2026-03-02T00:00:00+00:00",
        },
        "last_issued_at": None,
        "blocked_until": None,
    }
    data.update(changes)
    return data


BAD_FILES = {
    "empty": b"",
    "truncated": json.dumps(_document()).encode()[:-20],
    "not json": b"\x00\xff garbage",
    "a list": b"[]",
    "unknown schema": json.dumps(_document(schema=2)).encode(),
    "no schema": json.dumps({k: v for k, v in _document().items() if k != "schema"}).encode(),
    "REAL scope in the VTS file": json.dumps(_document(REAL)).encode(),
    "naive expiry": json.dumps(
        _document(token={**_document()["token"], "expires_at": "2026-03-03T00:00:00"})  # type: ignore[dict-item]
    ).encode(),
    "token with a space": json.dumps(
        _document(token={**_document()["token"], "value": "two words"})  # type: ignore[dict-item]
    ).encode(),
    "token missing a field": json.dumps(_document(token={"value": VALUE})).encode(),
    "bad ledger time": json.dumps(_document(last_issued_at="yesterday")).encode(),
    "huge": b" " * (70 * 1024) + json.dumps(_document()).encode(),
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_a_miss_with_a_warning_that_never_shows_the_token(
    store: FileTokenStore, folder: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(VTS, token())  # creates the folder
    store.path_for(VTS).write_bytes(content)

    with caplog.at_level(logging.WARNING):
        assert store.load(VTS) is None
        assert store.load_ledger(VTS) == IssuanceLedger()
        assert store.tokens() == []
    assert "ignoring token file" in caplog.text
    assert VALUE not in caplog.text
    store.save(VTS, token())  # and a save repairs it
    assert store.load(VTS) == token()


def test_a_symlinked_token_file_is_never_followed(
    store: FileTokenStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = FileTokenStore(tmp_path / "elsewhere")
    elsewhere.save(VTS, token())
    store.save(REAL, token(REAL))
    store.path_for(VTS).symlink_to(elsewhere.path_for(VTS))

    assert store.load(VTS) is None
    assert "symlink" in caplog.text


@pytest.mark.skipif(os.getuid() != 0, reason="changing a file's owner needs root")
def test_a_file_owned_by_another_user_is_refused(
    store: FileTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(VTS, token())
    os.chown(store.path_for(VTS), 4242, 4242)

    assert store.load(VTS) is None
    assert "owned by uid 4242" in caplog.text


def test_a_file_writable_by_others_is_refused(
    store: FileTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.save(VTS, token())
    store.path_for(VTS).chmod(0o666)

    assert store.load(VTS) is None
    assert "writable by other users" in caplog.text


def test_a_file_readable_by_others_is_still_read_and_tightened(store: FileTokenStore) -> None:
    store.save(VTS, token())
    store.path_for(VTS).chmod(0o644)

    assert store.load(VTS) == token()
    assert mode_of(store.path_for(VTS)) == 0o600


def test_a_failed_write_raises_token_store_error_and_keeps_the_old_file(
    store: FileTokenStore, folder: Path
) -> None:
    # Permissions do not stop root (CI runs as root), so the write is made to fail with a file
    # size limit instead: EFBIG on the temporary file, in a child so pytest's own files are spared.
    store.save(VTS, token())
    before = store.path_for(VTS).read_bytes()
    child = textwrap.dedent(
        f"""
        import resource, signal, sys
        from datetime import UTC, datetime
        from runtime.auth.stores.file import FileTokenStore
        from runtime.broker.base import AccessToken, BrokerScope, Mode
        from runtime.errors import TokenStoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        scope = BrokerScope(Mode.VTS, {VTS.key_fingerprint!r})
        new = AccessToken(
            value="eyJanother-token-value-0123456789abcdef", token_type="Bearer",
            expires_at=datetime(2030, 1, 1, tzinfo=UTC), issued_at=datetime(2029, 12, 31, tzinfo=UTC),
            scope=scope,
        )
        try:
            FileTokenStore({str(folder)!r}).save(scope, new)
        except TokenStoreError:
            sys.exit(0)
        sys.exit(3)
        """
    )
    command = [sys.executable, "-c", child]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603 (our script)
    assert result.returncode == 0, result.stderr
    assert store.path_for(VTS).read_bytes() == before
    assert store.load(VTS) == token()


def test_a_folder_that_cannot_be_created_raises_token_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TokenStoreError):
        FileTokenStore(blocker / "qts").save(VTS, token())


def test_tokens_skips_strangers_in_the_folder(store: FileTokenStore, folder: Path) -> None:
    store.save(VTS, token())
    (folder / "notes.json").write_text("{}")
    (folder / "VTS-xyz.json").write_text("{}")
    assert store.tokens() == [token()]


def test_the_lock_times_out_as_token_store_error(store: FileTokenStore, folder: Path) -> None:
    import filelock

    store.save(VTS, token())
    other = filelock.FileLock(folder / f"VTS-{VTS.key_fingerprint}.lock", thread_local=False)
    other.acquire()
    try:
        import threading

        errors: list[BaseException] = []

        def contender() -> None:
            try:
                with store.issuance_lock(VTS, 0.2):
                    pass
            except TokenStoreError as exc:
                errors.append(exc)

        thread = threading.Thread(target=contender)
        thread.start()
        thread.join(5)
        assert len(errors) == 1
    finally:
        other.release()


def test_qts_token_store_file_is_the_default_under_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KIS_VTS_APP_KEY", "PSvts0000000000000000000000000000001")
    monkeypatch.setenv("KIS_VTS_APP_SECRET", "s" * 180)
    settings = load_settings()
    assert settings.token_store == TokenStoreSpec(StoreKind.FILE)
    assert settings.wait_on_rate_limit is True
    built = build_store(settings.token_store)
    assert isinstance(built, FileTokenStore)
    assert built.folder == tmp_path / "xdg" / "qts"

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    built = build_store(TokenStoreSpec(StoreKind.FILE))
    assert isinstance(built, FileTokenStore)
    assert built.folder == tmp_path / "home" / ".cache" / "qts"

    monkeypatch.setenv("QTS_TOKEN_STORE", f"file:{tmp_path / 'mine'}")
    monkeypatch.setenv("QTS_WAIT_ON_RATE_LIMIT", "false")
    settings = load_settings()
    assert settings.wait_on_rate_limit is False
    built = build_store(settings.token_store)
    assert isinstance(built, FileTokenStore)
    assert built.folder == tmp_path / "mine"


def test_a_bad_qts_wait_on_rate_limit_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.errors import ConfigError

    monkeypatch.setenv("KIS_VTS_APP_KEY", "PSvts0000000000000000000000000000001")
    monkeypatch.setenv("KIS_VTS_APP_SECRET", "s" * 180)
    monkeypatch.setenv("QTS_WAIT_ON_RATE_LIMIT", "perhaps")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "QTS_WAIT_ON_RATE_LIMIT" in raised.value.problems


def test_a_redis_url_builds_a_redis_store_and_hides_its_password() -> None:
    from runtime.auth.stores.redis import RedisTokenStore

    spec = TokenStoreSpec(StoreKind.REDIS, "redis://:hunter2@127.0.0.1:6399/0")
    assert isinstance(build_store(spec), RedisTokenStore)  # connects lazily
    assert "hunter2" not in str(spec)
