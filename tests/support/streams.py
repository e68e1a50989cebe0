"""Real-time test rig: an emulator on 127.0.0.1 and sessions wired as the composition root does."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3

from kis_emulator import KISEmulator, demo_account
from runtime.auth.approval_cache import ApprovalKeyCache
from runtime.auth.ports import TokenStorePort
from runtime.auth.reconnect import Breaker
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.stream import RealtimeSession, Subscription
from runtime.broker.base import AppCredentials, BrokerAuthPort, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.broker.kis.stream import KISRealtimeConnector
from runtime.broker.realtime import StreamEvent
from runtime.clock import SystemClock

#: How long a test waits for events before failing (a busy 2-core machine).
WAIT_S = 20.0


@dataclass
class StreamRig:
    """One emulator and the sessions a test builds on it (closed by the fixture)."""

    emulator: KISEmulator
    http: urllib3.PoolManager = field(default_factory=urllib3.PoolManager)
    sessions: list[RealtimeSession] = field(default_factory=list)

    def adapter(self) -> KISBrokerAdapter:
        account = demo_account("VTS")
        return KISBrokerAdapter(
            Mode.VTS,
            AppCredentials(account.app_key, account.app_secret),
            self.http,
            base_url=self.emulator.base_url,
            clock=SystemClock(),
        )

    def session(
        self,
        *,
        store: TokenStorePort | None = None,
        broker: BrokerAuthPort | None = None,
        url: str | None = None,
        silence_s: float = 60.0,
        breaker: Breaker | None = None,
    ) -> RealtimeSession:
        clock = SystemClock()
        broker = broker or self.adapter()
        store = store if store is not None else InMemoryTokenStore()
        session = RealtimeSession(
            KISRealtimeConnector(broker.scope, url or self.emulator.ws_url),
            ApprovalKeyCache(broker, store, clock),
            store,
            clock,
            silence_s=silence_s,
            connect_timeout_s=5.0,
            breaker=breaker,
            rng=random.Random(7),  # noqa: S311 - reproducible jitter
        )
        self.sessions.append(session)
        return session

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        self.http.clear()


def take(subscription: Subscription, n: int, *, within_s: float = WAIT_S) -> list[StreamEvent]:
    """The next ``n`` events, or AssertionError after ``within_s``."""
    events: list[StreamEvent] = []
    ends = time.monotonic() + within_s
    while len(events) < n:
        left = ends - time.monotonic()
        assert left > 0, f"only {len(events)} of {n} events within {within_s:g} s"
        event = subscription.get(timeout_s=min(left, 0.5))
        if event is not None:
            events.append(event)
    return events


def wait_for(condition: Callable[[], bool], *, within_s: float = WAIT_S, what: str = "condition") -> None:
    ends = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < ends, f"{what} not met within {within_s:g} s"
        time.sleep(0.02)
