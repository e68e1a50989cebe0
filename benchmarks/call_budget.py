"""Call budget: an uncontended ``acquire`` (its slot free now) in process, and on Redis in round trips.

In process (``InProcessCallBudget`` on ``SystemClock``, no fake clock):

- **At KIS's limits, 20/s (REAL) and 2/s (VTS).** A slot is free only once the interval has
  passed, so calls must be spaced in real time. To get many samples without waiting minutes, the
  script runs 20 budgets side by side, as 20 runtimes on 20 keys would be (one budget and one
  scope each), and visits them in turn: one sweep acquires once on each (timed as one batch,
  divided by 20), then releases each (timed likewise), then sleeps until the interval plus 1 ms
  has passed since the sweep began. Only sweeps
  after the first KIS second are kept, so each budget holds its steady window (about ``limit``
  bookings of the last second). ``uncontended_share`` is the share of those acquires that did not
  wait (should be 1.0).
- **At 1e9/s**, the pacing-off setting of ``call_overhead.py``: one budget, timed batches of 200
  acquires (and of 200 acquire + release pairs), divided by the batch size. The window then holds
  the most bookings kept (``STARTS_KEPT``).
- **The floor**: a ``threading.Lock`` taken and given back around one clock read and one float
  comparison (what deciding "the slot is free" cannot do without), timed the same way.

On Redis (a throwaway ``redis-server`` on loopback; skipped when not installed): the commands the
budget's real connection sends per uncontended acquire and per release (a redis-py Connection
that counts, then talks as usual), the EVALSHA the server ran (INFO commandstats), and the time of
an acquire beside a PING round trip.

Targets (issue #16): in-process uncontended acquire median <= 2 us at 20/s and at 1e9/s;
on Redis, 1 round trip per uncontended acquire and 1 per release.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any, ClassVar, NamedTuple

from _common import Measured, distribution, perf_ns, redis_server, run_script, target
from runtime.auth.call_budget.gcra import BudgetPolicy
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import ClockPort, OffsetClock, SystemClock
from runtime.deadline import Deadline
from runtime.masking import fingerprint

ACQUIRE_TARGET_US = 2.0  # issue #16
BATCH = 200
BUDGETS = 20
CLOCK = SystemClock()


def _scope(i: int) -> BrokerScope:
    return BrokerScope(Mode.REAL, fingerprint(f"PSbench-budget-{i}"))


class _Floor:
    """The least a budget can do for a free slot: take a lock, read the clock, compare, book."""

    def __init__(self, clock: ClockPort = CLOCK) -> None:
        self._lock = threading.Lock()
        self._monotonic = clock.monotonic
        self._tat = 0.0

    def acquire(self) -> bool:
        with self._lock:
            now = self._monotonic()
            if now >= self._tat:
                self._tat = now + 1e-9
                return True
            return False


def _floor_ns(batches: int) -> list[float]:
    floor = _Floor()
    samples = []
    for _ in range(batches):
        t0 = perf_ns()
        for _ in range(BATCH):
            floor.acquire()
        samples.append((perf_ns() - t0) / BATCH)
    return samples


def _shifted(limit: float, calls: int) -> tuple[list[int], list[int], list[int], float]:
    """Per-call acquire, release and floor times (ns) on one budget whose clock jumps ahead.

    The clock is the machine's monotonic clock plus an offset (``runtime.clock.OffsetClock``),
    moved on by the interval + 1 ms before each call: every slot is free, the window holds its
    steady ``limit`` bookings of the last second, and nothing sleeps, so the figure is the
    budget's own work with warm caches. Each call is timed alone (the timer's ~0.1 us included),
    and so is the floor, on the same clock."""
    clock = OffsetClock()
    budget, scope, floor = InProcessCallBudget(clock, limit), _scope(0), _Floor(clock)
    step = BudgetPolicy(limit).interval + 0.001
    warm = int(limit) + 10  # the first KIS second fills the window: not kept
    acquires, releases, floors = [], [], []
    waited = 0
    for call in range(warm + calls):
        clock.advance(step)
        deadline = Deadline.after(clock, 10.0)
        t0 = perf_ns()
        booking = budget.acquire(scope, deadline)
        t1 = perf_ns()
        budget.release(scope, booking)
        t2 = perf_ns()
        floor.acquire()
        t3 = perf_ns()
        if call >= warm:
            acquires.append(t1 - t0)
            releases.append(t2 - t1)
            floors.append(t3 - t2)
            waited += booking.wait_s > 0
    return acquires, releases, floors, 1.0 - waited / calls


class Paced(NamedTuple):
    """Per-call times (ns) from the sweeps at a KIS limit, and the share of acquires that did not wait."""

    acquire: list[float]
    release: list[float]
    floor: list[float]
    free_share: float


def _paced(limit: float, sweeps: int) -> Paced:
    """BUDGETS budgets (and as many floors) visited in turn, each slot free, spaced in real time."""
    budgets = [(InProcessCallBudget(CLOCK, limit), _scope(i)) for i in range(BUDGETS)]
    floors = [_Floor() for _ in range(BUDGETS)]
    spacing = BudgetPolicy(limit).interval + 0.001
    warm = int(limit) + 1  # sweeps in the first KIS second fill each window: not kept
    found = Paced([], [], [], 0.0)
    waited = 0
    for sweep in range(warm + sweeps):
        began = time.monotonic()
        deadlines = [Deadline.after(CLOCK, 10.0) for _ in budgets]  # one per call, made beforehand
        if sweep % 2:  # the first batch after the pause pays the machine's wake-up: take turns
            floor_ns = _floors_ns(floors)
        t0 = perf_ns()
        bookings = [
            budget.acquire(scope, deadline)
            for (budget, scope), deadline in zip(budgets, deadlines, strict=True)
        ]
        t1 = perf_ns()
        for (budget, scope), booking in zip(budgets, bookings, strict=True):
            budget.release(scope, booking)
        acquire_ns, release_ns = t1 - t0, perf_ns() - t1
        if not sweep % 2:
            floor_ns = _floors_ns(floors)
        if sweep >= warm:
            found.acquire.append(acquire_ns / BUDGETS)
            found.release.append(release_ns / BUDGETS)
            found.floor.append(floor_ns / BUDGETS)
            waited += sum(k.wait_s > 0 for k in bookings)
        time.sleep(max(spacing - (time.monotonic() - began), 0.0))
    return found._replace(free_share=1.0 - waited / (sweeps * BUDGETS))


def _floors_ns(floors: list[_Floor]) -> int:
    t0 = perf_ns()
    for floor in floors:
        floor.acquire()
    return perf_ns() - t0


def _pacing_off(batches: int, *, release: bool) -> list[float]:
    budget, scope = InProcessCallBudget(CLOCK, 1e9), _scope(0)
    deadline = Deadline.after(CLOCK, 600.0)
    for _ in range(BATCH * 2):  # fill the window (STARTS_KEPT bookings)
        budget.release(scope, budget.acquire(scope, deadline))
    samples = []
    for _ in range(batches):
        t0 = perf_ns()
        if release:
            for _ in range(BATCH):
                budget.release(scope, budget.acquire(scope, deadline))
        else:
            for _ in range(BATCH):
                budget.acquire(scope, deadline)
        samples.append((perf_ns() - t0) / BATCH)
    return samples


def _redis_figures(url: str, calls: int) -> dict[str, Any]:
    import redis

    from runtime.auth.call_budget.redis import RedisCallBudget

    class Counting(redis.Connection):
        sent: ClassVar[list[str]] = []

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            self.sent.append(str(args[0]))
            super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    server = redis.Redis.from_url(url)
    pool = redis.ConnectionPool.from_url(url, connection_class=Counting, socket_timeout=1.0)
    client = redis.Redis(connection_pool=pool)
    budget = RedisCallBudget(client, CLOCK, 20.0, prefix=f"bench-{uuid.uuid4().hex}")
    scope = _scope(0)
    budget.release(scope, budget.acquire(scope, Deadline.after(CLOCK, 5)))  # connect, load the script

    def evalsha() -> int:
        return int(server.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    sends: dict[str, list[int]] = {"acquire": [], "release": []}
    served: dict[str, list[int]] = {"acquire": [], "release": []}
    acquire_us: list[float] = []
    ping_us: list[float] = []
    for _ in range(calls):
        time.sleep(BudgetPolicy(20.0).interval + 0.002)  # the slot is free again
        t0 = perf_ns()
        client.ping()
        ping_us.append((perf_ns() - t0) / 1000)
        before, ran = len(Counting.sent), evalsha()
        t0 = perf_ns()
        booking = budget.acquire(scope, Deadline.after(CLOCK, 5))
        acquire_us.append((perf_ns() - t0) / 1000)
        assert booking.wait_s == 0.0
        sends["acquire"].append(len(Counting.sent) - before)
        served["acquire"].append(evalsha() - ran)
        before, ran = len(Counting.sent), evalsha()
        budget.release(scope, booking)
        sends["release"].append(len(Counting.sent) - before)
        served["release"].append(evalsha() - ran)
    return {"sends": sends, "served": served, "acquire_us": acquire_us, "ping_us": ping_us}


def run(quick: bool) -> Measured:
    batches = 50 if quick else 500
    floor = distribution(_floor_ns(batches), digits=1)
    hot = distribution(_pacing_off(batches, release=False), digits=1)
    figures: dict[str, Any] = {
        "floor_ns": floor,
        "acquire_1e9_per_s_ns": hot,
        "acquire_release_1e9_per_s_ns": distribution(_pacing_off(batches, release=True), digits=1),
        "acquire_1e9_per_s_over_floor": round(hot["median"] / floor["median"], 2),
    }
    for name, limit in (("20_per_s", 20.0), ("2_per_s", 2.0)):
        acquires, releases, floors, free = _shifted(limit, 300 if quick else 3000)
        figures[f"acquire_{name}_ns"] = distribution(acquires, digits=1)
        figures[f"release_{name}_ns"] = distribution(releases, digits=1)
        figures[f"floor_{name}_ns"] = distribution(floors, digits=1)
        figures[f"free_share_{name}"] = round(free, 4)
    for name, limit, sweeps in (("20_per_s", 20.0, 60), ("2_per_s", 2.0, 8)):
        paced = _paced(limit, 4 if quick else sweeps)
        figures[f"paced_{name}_acquire_us"] = distribution([x / 1000 for x in paced.acquire])
        figures[f"paced_{name}_release_us"] = distribution([x / 1000 for x in paced.release])
        figures[f"paced_{name}_floor_us"] = distribution([x / 1000 for x in paced.floor])
        figures[f"paced_{name}_free_share"] = round(paced.free_share, 4)
    paced_ratio = (
        figures["paced_20_per_s_acquire_us"]["median"] / figures["paced_20_per_s_floor_us"]["median"]
    )
    figures["paced_20_per_s_acquire_over_floor"] = round(paced_ratio, 2)
    targets = {
        f"acquire_{name}": target(
            f"in-process acquire of a free slot at {label}, median <= {ACQUIRE_TARGET_US} us",
            figures[f"acquire_{name}_ns"]["median"] / 1000,
            figures[f"acquire_{name}_ns"]["median"] / 1000 <= ACQUIRE_TARGET_US,
        )
        for name, label in (("20_per_s", "20/s"), ("2_per_s", "2/s"), ("1e9_per_s", "1e9/s"))
    }
    notes = [
        f"floor_ns and 1e9/s: timed batches of {BATCH} on one budget, per call (hot).",
        "20/s and 2/s: one budget on the machine's clock shifted ahead by the interval + 1 ms before "
        "each call (OffsetClock: every slot free, nothing sleeps), each call and floor timed alone.",
        f"paced (not judged): {BUDGETS} budgets (one scope each) and {BUDGETS} floors visited in "
        "turn in real time, sweeps spaced by the interval + 1 ms, per call from each timed sweep; "
        "floor and budget take turns at being first after the pause. After a 50 ms pause this "
        "shared machine runs everything slower, the floor included: compare with the paced floor.",
    ]
    with redis_server() as url:
        if url is None:
            notes.append("redis-server is not installed: the Redis figures were skipped")
        else:
            _add_redis(figures, targets, _redis_figures(url, 5 if quick else 30))
    return Measured(figures, targets, notes)


def _add_redis(figures: dict[str, Any], targets: dict[str, Any], found: dict[str, Any]) -> None:
    for what in ("acquire", "release"):
        trips = max(found["sends"][what])
        figures[f"redis_{what}_commands_sent"] = trips
        figures[f"redis_{what}_evalsha_served"] = max(found["served"][what])
        targets[f"redis_{what}_round_trips"] = target(
            f"Redis: 1 round trip per uncontended {what}",
            trips,
            trips == 1 and min(found["sends"][what]) == 1 and max(found["served"][what]) == 1,
        )
    figures["redis_acquire_us"] = distribution(found["acquire_us"])
    figures["redis_ping_us"] = distribution(found["ping_us"])


if __name__ == "__main__":
    sys.exit(run_script(__file__, __doc__, run))
