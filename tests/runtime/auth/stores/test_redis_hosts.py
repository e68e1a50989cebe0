"""Several hosts sharing one app key through Redis only.

Every child ``python -m runtime.cli token --reveal`` gets its own empty XDG_CACHE_HOME (so no
file lock, token file or ledger is shared on disk) and ``QTS_TOKEN_STORE`` pointing at one
throwaway redis-server; whatever they share, they share through Redis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from kis_emulator import KISEmulator, demo_account
from runtime.auth.stores.redis import RedisTokenStore
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.masking import fingerprint
from tests.support.emulator import running_emulator
from tests.support.processes import start_together
from tests.support.redis import SKIP_REASON

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason=SKIP_REASON)

TIMEOUT_S = 60


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session's redis-server, with database 0 emptied for this test."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


def host_env(emulator: KISEmulator, home: Path, store_url: str) -> dict[str, str]:
    """The whole environment of one host: its own empty HOME and XDG_CACHE_HOME, the emulator
    of its mode with that mode's demo pair, and the shared Redis store."""
    mode = emulator.mode
    account = demo_account(mode)
    cache = home / "cache"
    cache.mkdir(parents=True)
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(cache),
        "KIS_MODE": mode,
        f"KIS_{mode}_BASE_URL": emulator.base_url,
        f"KIS_{mode}_APP_KEY": account.app_key,
        f"KIS_{mode}_APP_SECRET": account.app_secret,
        "QTS_TOKEN_STORE": store_url,
    }


def scope_of(mode: str) -> BrokerScope:
    return BrokerScope(Mode(mode), fingerprint(demo_account(mode).app_key))


def token_requests(emulator: KISEmulator) -> int:
    count = emulator.counters()["token_requests"]
    assert isinstance(count, int)
    return count


def run_host(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m runtime.cli token --reveal`` as one (re)started host."""
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", "token", "--reveal"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def run_hosts_at_once(envs: list[dict[str, str]], work: Path) -> list[tuple[int, str, str]]:
    """Start one ``qts token --reveal`` child per env, released together once all have imported.

    Returns (exit code, stdout, stderr) per child, in the order of ``envs``."""
    children = start_together(envs, work, timeout_s=TIMEOUT_S)
    try:
        results = []
        for child in children:
            stdout, stderr = child.communicate(timeout=TIMEOUT_S)
            results.append((child.returncode, stdout, stderr))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=5)


def test_six_hosts_with_separate_disks_started_together_send_one_tokenp_through_redis(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_emulator("VTS") as emulator:
        envs = [host_env(emulator, tmp_path / f"host{i}", redis_url) for i in range(6)]
        results = run_hosts_at_once(envs, tmp_path)

        assert [code for code, _out, _err in results] == [0] * 6, [err for _c, _o, err in results]
        tokens = {out.strip() for _code, out, _err in results}
        assert len(tokens) == 1, "the hosts ended with different tokens"
        (token,) = tokens
        assert token
        assert token_requests(emulator) == 1
        stored = RedisTokenStore(redis_client, SystemClock()).load(scope_of("VTS"))
        assert stored is not None
        assert stored.value == token
        for env in envs:  # nothing of the token went to any host's disk
            cache = Path(env["XDG_CACHE_HOME"])
            on_disk = [p for p in cache.rglob("*") if p.is_file() and token in p.read_text(errors="replace")]
            assert on_disk == []

        restarts = [
            run_host(host_env(emulator, tmp_path / f"restart{i}", redis_url), tmp_path) for i in range(4)
        ]

        assert [r.returncode for r in restarts] == [0] * 4, [r.stderr for r in restarts]
        assert {r.stdout.strip() for r in restarts} == {token}
        assert token_requests(emulator) == 1


def test_vts_and_real_hosts_sharing_one_redis_db_never_see_each_others_token(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with running_emulator("VTS") as vts, running_emulator("REAL") as real:
        envs = [
            host_env(emu, tmp_path / f"{emu.mode}{i}", redis_url) for i in range(3) for emu in (vts, real)
        ]
        together = run_hosts_at_once(envs, tmp_path)
        later = [
            run_host(host_env(emu, tmp_path / f"{emu.mode}-later", redis_url), tmp_path)
            for emu in (vts, real)
        ]

        assert [code for code, _out, _err in together] == [0] * 6, [err for _c, _o, err in together]
        assert [r.returncode for r in later] == [0, 0], [r.stderr for r in later]
        outputs = [
            (env["KIS_MODE"], out.strip()) for env, (_code, out, _err) in zip(envs, together, strict=True)
        ]
        outputs += [("VTS", later[0].stdout.strip()), ("REAL", later[1].stdout.strip())]
        vts_tokens = {value for mode, value in outputs if mode == "VTS"}
        real_tokens = {value for mode, value in outputs if mode == "REAL"}
        assert len(vts_tokens) == len(real_tokens) == 1
        assert vts_tokens.isdisjoint(real_tokens)
        assert token_requests(vts) == token_requests(real) == 1

        store = RedisTokenStore(redis_client, SystemClock())
        stored_vts, stored_real = store.load(scope_of("VTS")), store.load(scope_of("REAL"))
        assert stored_vts is not None
        assert stored_real is not None
        assert {stored_vts.value} == vts_tokens
        assert {stored_real.value} == real_tokens
        assert sorted(k.decode() for k in redis_client.scan_iter(match="qts:token:*")) == sorted(
            [
                f"qts:token:VTS:{scope_of('VTS').key_fingerprint}",
                f"qts:token:REAL:{scope_of('REAL').key_fingerprint}",
            ]
        )


@pytest.mark.parametrize("lifetime", [timedelta(hours=24), timedelta(hours=2)], ids=["24h", "2h"])
def test_the_redis_key_lives_as_long_as_the_token(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, lifetime: timedelta
) -> None:
    with running_emulator("VTS", token_lifetime=lifetime) as emulator:
        result = run_host(host_env(emulator, tmp_path / "host", redis_url), tmp_path)
        assert result.returncode == 0, result.stderr

    key = f"qts:token:VTS:{scope_of('VTS').key_fingerprint}"
    pttl_ms = redis_client.pttl(key)
    ttl_s = redis_client.ttl(key)
    now = SystemClock().now()
    token = RedisTokenStore(redis_client, SystemClock()).load(scope_of("VTS"))
    assert token is not None
    assert token.value == result.stdout.strip()
    life_left = (token.expires_at - now).total_seconds()

    assert isinstance(pttl_ms, int)
    assert isinstance(ttl_s, int)
    assert abs(life_left - lifetime.total_seconds()) < 5  # the emulator's lifetime, not a default
    assert abs(pttl_ms / 1000 - life_left) < 3
    assert abs(ttl_s - life_left) < 3
