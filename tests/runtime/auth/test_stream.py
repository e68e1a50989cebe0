"""RealtimeSession over real sockets to the emulator: multiplexing, drops, keys, liveness, limits."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kis_emulator import EmulatorConfig, KISEmulator, demo_account
from runtime.auth.reconnect import Breaker
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.broker.base import Mode
from runtime.broker.realtime import DEPTH_TR, TRADE_TR, OrderBook, Registration, Trade, registrations_for
from runtime.clock import SystemClock
from runtime.errors import (
    ApprovalKeyRejectedError,
    StreamBreakerOpenError,
    StreamSessionHeldError,
    SubscriptionLimitError,
)
from tests.support.fakes import FakeBroker
from tests.support.redis import redis_server
from tests.support.streams import StreamRig, take, wait_for

SAMSUNG = Registration(TRADE_TR, "005930")
HYNIX_BOOK = Registration(DEPTH_TR, "000660")


@pytest.fixture
def rig() -> Iterator[StreamRig]:
    """A fast emulator on loopback and the sessions a test builds on it (never a mocked socket)."""
    config = EmulatorConfig(max_rps=None, ws_tick_interval=0.01, ws_ping_interval=5.0)
    with KISEmulator("VTS", config=config) as emulator:
        built = StreamRig(emulator)
        try:
            yield built
        finally:
            built.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def test_subscribers_share_one_connection_and_get_only_what_they_asked_for(rig: StreamRig) -> None:
    session = rig.session()
    trades = session.subscribe([SAMSUNG])
    both = session.subscribe([SAMSUNG, HYNIX_BOOK])
    assert all(isinstance(e, Trade) and e.code == "005930" for e in take(trades, 20))
    seen = {(e.tr_id, e.code) for e in take(both, 40)}
    assert seen == {(TRADE_TR, "005930"), (DEPTH_TR, "000660")}
    counters = rig.emulator.stream_counters()
    assert counters["ws_connections"] == 1
    assert counters["ws_subscribes"] == 2  # 005930 once, though two subscribers want it


def test_events_are_typed_by_field_name_and_multi_record_frames_count_each_record(rig: StreamRig) -> None:
    session = rig.session()
    subscription = session.subscribe(registrations_for(["005930"], depth=True))
    events = take(subscription, 60)
    trade = next(e for e in events if isinstance(e, Trade))
    book = next(e for e in events if isinstance(e, OrderBook))
    assert trade.price > 0
    assert trade.volume > 0
    assert len(trade.time) == 6
    assert len(book.asks) == len(book.bids) == 10
    assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)  # lowest ask first
    assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
    counters = rig.emulator.stream_counters()
    assert counters["ws_records_sent"] > counters["ws_frames_sent"]  # some frames carried two records


def test_a_closed_subscriber_releases_registrations_no_one_else_needs(rig: StreamRig) -> None:
    session = rig.session()
    keep = session.subscribe([SAMSUNG])
    leave = session.subscribe([SAMSUNG, HYNIX_BOOK])
    take(leave, 5)
    leave.close()
    wait_for(lambda: rig.emulator.stream_counters().get("ws_unsubscribes", 0) == 1, what="one unsubscribe")
    assert session.registrations == [SAMSUNG]
    assert take(keep, 5)
    with pytest.raises(StopIteration):
        leave.get(timeout_s=0.1)


def test_a_dropped_connection_reconnects_at_once_and_resends_every_registration(rig: StreamRig) -> None:
    session = rig.session()
    subscription = session.subscribe([SAMSUNG, HYNIX_BOOK])
    take(subscription, 10)
    dropped_at = time.monotonic()
    rig.emulator.drop_streams()
    wait_for(lambda: session.stats.drops == 1, what="the drop seen")
    take(subscription, 30)  # events from both registrations again
    assert session.stats.connects == 2
    assert time.monotonic() - dropped_at < 10  # first retry within 1 s; generous for a busy machine
    assert rig.emulator.stream_counters()["ws_subscribes"] == 4


def test_a_voided_approval_key_is_invalidated_and_reissued_once(rig: StreamRig) -> None:
    session = rig.session()
    subscription = session.subscribe([SAMSUNG])
    take(subscription, 5)
    rig.emulator.void_approval_keys()
    rig.emulator.drop_streams()
    take(subscription, 20)
    counters = rig.emulator.stream_counters()
    assert counters["approval_keys_issued"] == 2
    assert counters["ws_errors_by_code"]["OPSP0011"] == 1
    assert session.stats.approval_reissues == 1


def test_a_key_the_server_never_accepts_stops_the_stream_after_one_reissue(rig: StreamRig) -> None:
    account = demo_account("VTS")
    foreign_keys = FakeBroker(SystemClock(), mode=Mode.VTS, app_key=account.app_key)  # KIS never issued these
    session = rig.session(broker=foreign_keys)
    subscription = session.subscribe([SAMSUNG])
    with pytest.raises(ApprovalKeyRejectedError) as stopped:
        take(subscription, 1)
    assert stopped.value.code == "OPSP0011"
    assert len(foreign_keys.approvals) == 2  # the first, then exactly one reissue
    with pytest.raises(ApprovalKeyRejectedError):
        session.subscribe([HYNIX_BOOK])  # a dead session says why


def test_a_frame_with_a_wrong_field_count_is_logged_and_the_stream_goes_on(
    rig: StreamRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.auth.stream")
    rig.emulator.inject_stream_fault("bad_frame", after_frames=3)
    session = rig.session()
    subscription = session.subscribe([SAMSUNG])
    take(subscription, 20)
    assert session.stats.bad_frames == 1
    assert session.stats.connects == 1
    assert any("StreamFrameError" in r.getMessage() and "45 fields" in r.getMessage() for r in caplog.records)


def test_pingpong_is_echoed_so_the_server_keeps_the_session(rig: StreamRig) -> None:
    rig.emulator.set_config(ws_ping_interval=0.1, ws_unanswered_pings=2, ws_tick_interval=0.05)
    session = rig.session()
    subscription = session.subscribe([SAMSUNG])
    wait_for(lambda: rig.emulator.stream_counters().get("ws_pingpong_echoed", 0) >= 5, what="5 echoes")
    take(subscription, 5)
    assert session.stats.connects == 1
    assert session.stats.heartbeats >= 5
    assert session.stats.events >= 5  # PINGPONG is never an event


def test_silence_longer_than_the_limit_counts_as_a_drop(rig: StreamRig) -> None:
    rig.emulator.inject_stream_fault("silence", after_frames=3, seconds=30)
    session = rig.session(silence_s=1.0)
    subscription = session.subscribe([SAMSUNG])
    take(subscription, 10)  # the first connection falls silent; the second streams
    assert session.stats.silences == 1
    assert session.stats.connects == 2


def test_the_42nd_registration_is_refused_before_anything_is_sent(rig: StreamRig) -> None:
    session = rig.session()
    codes = [f"{n:06d}" for n in range(1, 42)]
    subscription = session.subscribe(registrations_for(codes))
    take(subscription, 5)
    with pytest.raises(SubscriptionLimitError, match="42 registrations"):
        session.subscribe([Registration(TRADE_TR, "000042")])
    assert session.subscribe([Registration(TRADE_TR, "000001")])  # already counted: fine
    wait_for(lambda: rig.emulator.stream_counters()["ws_subscribes"] == 41, what="41 subscribes")
    time.sleep(0.5)
    counters = rig.emulator.stream_counters()
    assert counters["ws_subscribes"] == 41
    assert "OPSP0008" not in counters["ws_errors_by_code"]


def test_too_many_registrations_at_once_never_connect(rig: StreamRig) -> None:
    session = rig.session()
    with pytest.raises(SubscriptionLimitError):
        session.subscribe(registrations_for([f"{n:06d}" for n in range(1, 22)], depth=True))
    assert rig.emulator.stream_counters().get("ws_connections", 0) == 0


def test_encrypted_order_notices_are_never_registered() -> None:
    for tr_id in ("H0STCNI0", "H0STCNI9"):
        with pytest.raises(SubscriptionLimitError, match="encrypted order notice"):
            Registration(tr_id, "005930")
    with pytest.raises(ValueError, match="tr_id"):
        Registration("FHKST01010100", "005930")


def test_async_for_reads_the_same_session(rig: StreamRig) -> None:
    session = rig.session()
    blocking = session.subscribe([SAMSUNG])
    asynchronous = session.subscribe([SAMSUNG])

    async def first(n: int) -> list[Trade | OrderBook]:
        got = []
        async for event in asynchronous:
            got.append(event)
            if len(got) == n:
                break
        return got

    assert len(asyncio.run(first(10))) == 10
    assert len(take(blocking, 10)) == 10
    assert rig.emulator.stream_counters()["ws_connections"] == 1


def test_a_second_session_on_a_shared_store_is_refused_naming_the_holder(
    rig: StreamRig, tmp_path: Path
) -> None:
    first = rig.session(store=FileTokenStore(tmp_path / "qts"))
    streaming = first.subscribe([SAMSUNG])
    take(streaming, 5)
    second = rig.session(store=FileTokenStore(tmp_path / "qts"))
    with pytest.raises(
        StreamSessionHeldError, match=rf"held by {socket.gethostname()} \(pid {os.getpid()}\)"
    ):
        second.subscribe([SAMSUNG])
    take(streaming, 10)  # never kicked
    counters = rig.emulator.stream_counters()
    assert counters["ws_connections"] == 1
    assert "OPSP8996" not in counters["ws_errors_by_code"]


def test_without_a_shared_store_kis_s_opsp8996_stops_the_newcomer_not_the_holder(rig: StreamRig) -> None:
    holder = rig.session(store=InMemoryTokenStore())
    streaming = holder.subscribe([SAMSUNG])
    take(streaming, 5)
    newcomer = rig.session(store=InMemoryTokenStore())
    refused = newcomer.subscribe([SAMSUNG])
    with pytest.raises(StreamSessionHeldError) as stopped:
        take(refused, 1)
    assert stopped.value.code == "OPSP8996"
    take(streaming, 10)
    assert holder.stats.connects == 1
    assert rig.emulator.stream_counters()["ws_sessions_refused"] == 3  # a few spaced tries, then stop


@pytest.fixture
def flapping_server() -> Iterator[tuple[str, list[float]]]:
    """Accepts TCP connections and closes each at once: a server that flaps."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[float] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(time.monotonic())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    listener.close()


def test_the_breaker_stops_reconnecting_to_a_flapping_server(
    rig: StreamRig, flapping_server: tuple[str, list[float]]
) -> None:
    url, accepted = flapping_server
    session = rig.session(url=url, breaker=Breaker(max_failures=3, window_s=60.0))
    subscription = session.subscribe([SAMSUNG])
    started = time.monotonic()
    with pytest.raises(StreamBreakerOpenError):
        take(subscription, 1, within_s=60)
    assert len(accepted) == 3
    gaps = [b - a for a, b in itertools.pairwise(accepted)]
    assert gaps[0] < 2.0  # first retry within 1 s (+ slack)
    assert gaps[1] >= 1.0  # then backing off
    assert time.monotonic() - started < 30


def test_closing_ends_every_subscription_releases_the_lease_and_refuses_new_ones(
    rig: StreamRig, tmp_path: Path
) -> None:
    from runtime.errors import InvalidRequestError

    store = FileTokenStore(tmp_path / "qts")
    session = rig.session(store=store)
    subscription = session.subscribe([SAMSUNG])
    take(subscription, 3)
    session.close()
    drained = list(subscription)  # events queued before the close, then the iteration ends
    assert all(isinstance(event, Trade) for event in drained)
    with pytest.raises(StopIteration):
        subscription.get(timeout_s=1)
    with pytest.raises(InvalidRequestError):
        session.subscribe([SAMSUNG])
    wait_for(lambda: rig.emulator.stream_counters()["ws_open_sessions"] == 0, what="the socket closed")
    successor = rig.session(store=store)  # the lease is free again
    assert take(successor.subscribe([SAMSUNG]), 3)


def test_a_redis_lease_shares_the_session_across_hosts_and_a_lost_lease_stops_the_stream(
    rig: StreamRig, redis_url: str
) -> None:
    import redis

    from runtime.auth.stores.redis import RedisTokenStore

    prefix = f"stream-{os.getpid()}-{time.monotonic_ns()}"

    def host() -> RedisTokenStore:
        return RedisTokenStore.from_url(redis_url, SystemClock(), prefix=prefix, stream_lease_s=0.6)

    holder = rig.session(store=host())
    streaming = holder.subscribe([SAMSUNG])
    take(streaming, 5)
    with pytest.raises(StreamSessionHeldError, match=r"held by \S+ \(pid \d+\)"):
        rig.session(store=host()).subscribe([SAMSUNG])  # another "host" on the same Redis
    assert rig.emulator.stream_counters()["approval_keys_issued"] == 1  # the refused host asked nothing
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*client.keys(f"{prefix}:stream:*"))  # the lease vanishes (an operator, a failover)
    finally:
        client.close()
    with pytest.raises(StreamSessionHeldError, match="lease was lost"):
        take(streaming, 10_000, within_s=20)


def test_an_approval_request_that_fails_on_the_network_is_retried_like_a_failed_connect(
    rig: StreamRig,
) -> None:
    rig.emulator.inject_fault("html_502", count=1, path="/oauth2/Approval")
    session = rig.session()
    assert take(session.subscribe([SAMSUNG]), 5)
    assert rig.emulator.stream_counters()["approval_requests"] == 2
    assert session.stats.connects == 1


def test_async_for_ends_when_the_subscription_closes_and_raises_the_session_s_error(rig: StreamRig) -> None:
    session = rig.session()
    subscription = session.subscribe([SAMSUNG])

    async def until_closed() -> int:
        seen = 0
        async for _event in subscription:
            seen += 1
            if seen == 3:
                subscription.close()
        return seen

    assert asyncio.run(until_closed()) >= 3

    account = demo_account("VTS")
    doomed = rig.session(broker=FakeBroker(SystemClock(), mode=Mode.VTS, app_key=account.app_key))
    rejected = doomed.subscribe([SAMSUNG])

    async def drain() -> None:
        async for _event in rejected:
            pass

    with pytest.raises(ApprovalKeyRejectedError):
        asyncio.run(drain())
