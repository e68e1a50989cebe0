"""The one-session stream lease dies with its holder: a killed process (file), a silent host (Redis)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime.auth.ports import LeaseHolder
from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.errors import StreamSessionHeldError
from runtime.masking import fingerprint

SCOPE = BrokerScope(Mode.VTS, fingerprint("PSlease"))

HOLD = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from runtime.auth.ports import LeaseHolder
    from runtime.auth.stores.file import FileTokenStore
    from runtime.broker.base import BrokerScope, Mode
    from runtime.masking import fingerprint
    store = FileTokenStore(sys.argv[1])
    lease = store.acquire_stream_lease(
        BrokerScope(Mode.VTS, fingerprint("PSlease")), LeaseHolder("child-host", 1234, datetime.now(UTC))
    )
    print("held", flush=True)
    time.sleep(120)
    """
)


def me(pid: int = 1) -> LeaseHolder:
    return LeaseHolder(host="parent-host", pid=pid, since=datetime.now(UTC))


def test_a_file_lease_dies_with_its_process(tmp_path: Path) -> None:
    folder = tmp_path / "qts"
    child = subprocess.Popen(  # noqa: S603 - this interpreter and a fixed script
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(StreamSessionHeldError, match=r"held by child-host \(pid 1234\)"):
            FileTokenStore(folder).acquire_stream_lease(SCOPE, me())
        child.kill()  # no release, no cleanup: only the kernel frees the flock
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        if child.stdout is not None:
            child.stdout.close()
    lease = FileTokenStore(folder).acquire_stream_lease(SCOPE, me(2))
    assert lease.holder.pid == 2
    lease.release()


def test_a_file_lease_never_follows_a_symlinked_lock(tmp_path: Path) -> None:
    folder = tmp_path / "qts"
    folder.mkdir(mode=0o700)
    (folder / f"VTS-{SCOPE.key_fingerprint}.stream.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="cannot open"):
        FileTokenStore(folder).acquire_stream_lease(SCOPE, me())


def test_a_redis_lease_is_renewed_while_held_and_expires_once_its_holder_goes_silent(redis_url: str) -> None:
    from runtime.auth.stores.redis import RedisTokenStore

    prefix = f"lease-{uuid.uuid4().hex}"
    host_a = RedisTokenStore.from_url(redis_url, SystemClock(), prefix=prefix, stream_lease_s=0.6)
    host_b = RedisTokenStore.from_url(redis_url, SystemClock(), prefix=prefix, stream_lease_s=0.6)
    lease = host_a.acquire_stream_lease(SCOPE, me(1))
    time.sleep(1.5)  # well past one TTL: only the renewals keep it
    with pytest.raises(StreamSessionHeldError, match=r"held by parent-host \(pid 1\)"):
        host_b.acquire_stream_lease(SCOPE, me(2))
    assert not lease.lost
    lease._stop.set()  # the holder dies: nobody renews
    deadline = time.monotonic() + 10
    while True:
        try:
            taken = host_b.acquire_stream_lease(SCOPE, me(2))
            break
        except StreamSessionHeldError:
            assert time.monotonic() < deadline, "the lease outlived its TTL"
            time.sleep(0.05)
    assert taken.holder.pid == 2
    lease.release()  # the dead holder's late release must not free the new holder's lease
    with pytest.raises(StreamSessionHeldError):
        host_a.acquire_stream_lease(SCOPE, me(3))
    taken.release()
