"""A runtime built before fork() never hands one process's answer to the other (real os.fork()).

Before the fix the child inherited the parent's pooled keep-alive socket: both processes wrote
requests into one connection and read whichever answer came first (3-27 of 60 crossed over).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from kis_emulator import EmulatorConfig, KISEmulator, demo_account
from runtime.auth.session import KISRuntime
from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.forksafe import renew_in_child
from runtime.settings import Settings, StoreKind, TokenStoreSpec

PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
CALLS = 60


def _ask(kis: KISRuntime, code: str) -> str:
    answer = kis.call(
        "GET", PRICE, tr_id="FHKST01010100", params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code}
    )
    output = answer.body["output"]
    assert isinstance(output, dict)
    return str(output["stck_shrn_iscd"])


def _crossed(kis: KISRuntime, code: str) -> list[str]:
    """The answers among CALLS that were not about ``code``."""
    return [got for got in (_ask(kis, code) for _ in range(CALLS)) if got != code]


def _child(kis: KISRuntime, write_fd: int, go_fd: int) -> None:
    """In the forked child: ask for another code, report, never return into pytest."""
    code = 1
    try:
        os.read(go_fd, 1)  # start together with the parent: the old bug needs both on the socket
        crossed = _crossed(kis, "000660")
        report = {"crossed": crossed, "issued": kis.cache.issued_count}
        code = 0
    except BaseException as exc:  # anything at all must reach the parent, not pytest's machinery
        report = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        os.write(write_fd, json.dumps(report).encode())
        os._exit(code)


@pytest.mark.parametrize("store", ["memory", "file"])
def test_parent_and_child_each_get_only_their_own_answers(store: str, tmp_path: Path) -> None:
    account = demo_account("REAL")
    spec = (
        TokenStoreSpec(StoreKind.FILE, str(tmp_path / "qts"))
        if store == "file"
        else TokenStoreSpec(StoreKind.MEMORY)
    )
    with KISEmulator("REAL", config=EmulatorConfig(max_rps=None)) as emulator:
        settings = Settings(
            mode=Mode.REAL,
            credentials=AppCredentials(account.app_key, account.app_secret),
            base_url=emulator.base_url,
            token_store=spec,
            max_rps=2000.0,  # the emulator counts no limit here: as fast as both processes go
        )
        with build_runtime(settings) as kis:
            assert _ask(kis, "005930") == "005930"  # the pool now holds a keep-alive connection
            issued_before_fork = kis.cache.issued_count
            read_fd, write_fd = os.pipe()
            go_read, go_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(kis, write_fd, go_read)
            os.close(write_fd)
            os.write(go_write, b"!")
            parent_crossed = _crossed(kis, "005930")
            with os.fdopen(read_fd) as pipe:
                report = json.loads(pipe.read())
            _pid, status = os.waitpid(pid, 0)
            after = _ask(kis, "005930")  # the parent's own connection still works
        assert "error" not in report, report
        assert os.waitstatus_to_exitcode(status) == 0
        assert parent_crossed == []
        assert report["crossed"] == []
        assert after == "005930"
        assert report["issued"] == issued_before_fork, "the child kept the parent's token"
        assert emulator.counters()["token_requests"] == 1


def test_renewals_run_in_the_child_only_and_forget_dead_objects() -> None:
    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.renewed = False

    holder = Holder()
    holder.lock.acquire()  # as if another thread held it at the fork

    def renew(h: Holder) -> None:
        h.renewed = True
        h.lock = threading.Lock()

    renew_in_child(holder, renew)
    renew_in_child(Holder(), renew)  # collected at once: forgotten
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = holder.renewed and holder.lock.acquire(timeout=1)
        os.write(write_fd, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert not holder.renewed
