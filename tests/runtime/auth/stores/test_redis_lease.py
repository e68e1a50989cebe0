"""The Redis issuance lock dies with its holder: a short lease, renewed while a live holder keeps it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from runtime.auth.stores.redis import LOCK_LEASE_S, RedisTokenStore
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.errors import TokenStoreError
from runtime.masking import fingerprint

SCOPE = BrokerScope(Mode.REAL, fingerprint("PSreal-lease-key"))
LEASE_S = 2.0

# argv: Redis URL, prefix, lease, ready file. Takes the lock, says so, then holds it "forever".
HOLDER = textwrap.dedent(
    """
    import pathlib, sys, time
    from runtime.auth.stores.redis import RedisTokenStore
    from runtime.broker.base import BrokerScope, Mode
    from runtime.clock import SystemClock
    from runtime.masking import fingerprint
    lease = float(sys.argv[3])
    store = RedisTokenStore.from_url(sys.argv[1], SystemClock(), prefix=sys.argv[2], lock_lease_s=lease)
    with store.issuance_lock(BrokerScope(Mode.REAL, fingerprint("PSreal-lease-key")), 10):
        pathlib.Path(sys.argv[4]).touch()
        time.sleep(120)
    """
)


def test_the_default_lease_is_short() -> None:
    assert LOCK_LEASE_S <= 10


@pytest.mark.slow
def test_a_holder_killed_with_the_lock_blocks_the_next_for_one_short_lease_at_most(
    redis_url: str, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    holder = subprocess.Popen(  # noqa: S603 - this interpreter and our own script
        [sys.executable, "-c", HOLDER, redis_url, "lease-kill", str(LEASE_S), str(ready)]
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "the holder did not take the lock"
            assert holder.poll() is None
            time.sleep(0.01)
        time.sleep(LEASE_S * 1.5)  # the holder has renewed the lease at least once by now
        store = RedisTokenStore.from_url(redis_url, SystemClock(), prefix="lease-kill", lock_lease_s=LEASE_S)
        with pytest.raises(TokenStoreError), store.issuance_lock(SCOPE, 0.2):
            pass  # still held: the live holder kept renewing past its first lease
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        killed = time.monotonic()
        with store.issuance_lock(SCOPE, 30):
            waited = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert waited <= LEASE_S + 1.0


def test_a_live_holder_keeps_the_lock_for_longer_than_its_lease(redis_url: str) -> None:
    store = RedisTokenStore.from_url(redis_url, SystemClock(), prefix="lease-live", lock_lease_s=0.6)
    other = RedisTokenStore.from_url(redis_url, SystemClock(), prefix="lease-live", lock_lease_s=0.6)
    outcome: list[str] = []

    def contend() -> None:
        try:
            with other.issuance_lock(SCOPE, 1.5):
                outcome.append("got it")
        except TokenStoreError:
            outcome.append("refused")

    with store.issuance_lock(SCOPE, 1):
        contender = threading.Thread(target=contend)
        contender.start()
        contender.join()  # 1.5 s: more than two leases while we hold the lock
    assert outcome == ["refused"]
    with other.issuance_lock(SCOPE, 0.5):
        pass  # released: the next one gets it at once


def test_a_valid_token_in_the_store_is_served_while_a_dead_host_still_holds_the_lock(redis_url: str) -> None:
    import redis as redis_py

    from runtime.auth.token_cache import TokenCache, TokenSource
    from runtime.clock import FakeClock
    from runtime.deadline import Deadline
    from tests.support.fakes import FakeBroker

    clock = FakeClock()
    broker = FakeBroker(clock, mode=Mode.REAL)
    store = RedisTokenStore.from_url(redis_url, clock, prefix="lease-served")
    saved = broker.issue_token(deadline=Deadline.after(clock, 5))
    store.save(broker.scope, saved)
    # A host died holding the issuance lock for a long time (as with the old 120 s lease).
    lock_key = f"lease-served:lock:{broker.scope.mode.value}:{broker.scope.key_fingerprint}"
    redis_py.Redis.from_url(redis_url).set(lock_key, b"dead-host", ex=120)
    cache = TokenCache(broker, store, clock)
    started = time.monotonic()
    assert cache.get(deadline=Deadline.after(clock, 0.5)) == saved
    assert time.monotonic() - started < 0.4
    assert cache.last_source == TokenSource.STORE
    assert broker.issue_calls == 1  # ours, above: the cache issued nothing
