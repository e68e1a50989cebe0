"""The Redis call budget's round trips on a real redis-server, counted on both ends.

Issue #16: an uncontended acquire (its slot free now) is one round trip, as is a release; a
contended one books, sleeps, and starts in a second script run. The client side counts the
commands its real connection sends (a redis-py Connection that counts, then talks as usual); the
server side counts the EVALSHA it ran (INFO commandstats, where the commands inside a script
count too, so only the top-level ones are compared).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

import redis

from runtime.auth.call_budget.gcra import BudgetPolicy
from runtime.auth.call_budget.redis import RedisCallBudget
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.masking import fingerprint

SCOPE = BrokerScope(Mode.REAL, fingerprint("PSreal-round-trips"))
CLOCK = SystemClock()


class CountingConnection(redis.Connection):
    """A real connection that counts the commands it sends."""

    sent: ClassVar[list[str]] = []

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(str(args[0]))
        super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]


class Trips:
    """Commands the budget's client sent, and top-level commands the server ran, so far."""

    def __init__(self, redis_url: str) -> None:
        self._server = redis.Redis.from_url(redis_url)

    def now(self) -> tuple[int, int]:
        stats = self._server.info("commandstats")
        served = sum(
            int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval", "script")
        )
        return len(CountingConnection.sent), served


def _budget(redis_url: str, limit: float) -> RedisCallBudget:
    CountingConnection.sent.clear()
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection, socket_timeout=1.0)
    return RedisCallBudget(
        redis.Redis(connection_pool=pool), CLOCK, limit, prefix=f"trips-{uuid.uuid4().hex}"
    )


def test_an_uncontended_acquire_and_its_release_are_one_round_trip_each(redis_url: str) -> None:
    trips = Trips(redis_url)
    budget = _budget(redis_url, 20)
    budget.release(SCOPE, budget.acquire(SCOPE, Deadline.after(CLOCK, 5)))  # connects, loads the script
    for _ in range(5):
        time.sleep(BudgetPolicy(20).interval + 0.005)  # the next slot is free: uncontended
        sent, served = trips.now()
        booking = budget.acquire(SCOPE, Deadline.after(CLOCK, 5))
        acquired = trips.now()
        budget.release(SCOPE, booking)
        released = trips.now()
        assert booking.wait_s == 0.0
        assert (acquired[0] - sent, acquired[1] - served) == (1, 1), "one EVALSHA books and starts"
        assert (released[0] - acquired[0], released[1] - acquired[1]) == (1, 1), "one EVALSHA reports"
    assert set(CountingConnection.sent[-10:]) == {"EVALSHA"}
    usage = budget.usage(SCOPE)
    assert usage is not None
    assert usage.used_last_s >= 5


def test_a_contended_acquire_books_then_starts_at_its_slot(redis_url: str) -> None:
    trips = Trips(redis_url)
    budget = _budget(redis_url, 20)
    budget.acquire(SCOPE, Deadline.after(CLOCK, 5))  # loads the script; the next slot is 50 ms on
    sent, served = trips.now()
    booking = budget.acquire(SCOPE, Deadline.after(CLOCK, 5))
    assert booking.wait_s > 0.02
    after = trips.now()
    assert (after[0] - sent, after[1] - served) == (2, 2), "book, sleep, start"
