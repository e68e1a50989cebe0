"""CallBudgetPort contract, run against every call budget: in-process, file and Redis.

On the real clock (Redis books on its own ``TIME``), with limits high enough that each test takes
a fraction of a second. The algorithm on a fake clock: tests/runtime/auth/test_call_budget_gcra.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from contracts.support import redis_server
from runtime.auth.call_budget.file import FileCallBudget
from runtime.auth.call_budget.gcra import BudgetPolicy
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.ports import CallBudgetPort
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.errors import CallBudgetExhaustedError, RateLimitedError
from runtime.masking import fingerprint

VTS = BrokerScope(Mode.VTS, fingerprint("PSvts-key-one"))
REAL = BrokerScope(Mode.REAL, fingerprint("PSreal-key-one"))
CLOCK = SystemClock()

#: Builds a budget with a limit; the same request and name give budgets sharing one state.
Factory = Callable[[float], CallBudgetPort]


def _redis_factory(request: pytest.FixtureRequest) -> Factory:
    from runtime.auth.call_budget.redis import RedisCallBudget

    url = request.getfixturevalue("redis_url")
    prefix = f"contract-{uuid.uuid4().hex}"
    return lambda limit: RedisCallBudget.from_url(url, CLOCK, limit, prefix=prefix)


def _file_factory(request: pytest.FixtureRequest) -> Factory:
    folder = request.getfixturevalue("tmp_path") / "qts"
    return lambda limit: FileCallBudget(folder, CLOCK, limit)


def _memory_factory(_request: pytest.FixtureRequest) -> Factory:
    return lambda limit: InProcessCallBudget(CLOCK, limit)


BUDGETS: dict[str, Callable[[pytest.FixtureRequest], Factory]] = {
    "memory": _memory_factory,
    "file": _file_factory,
    "redis": _redis_factory,
}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=sorted(BUDGETS))
def make(request: pytest.FixtureRequest) -> Factory:
    return BUDGETS[request.param](request)


def _deadline(seconds: float = 10.0) -> Deadline:
    return Deadline.after(CLOCK, seconds)


def test_nothing_is_booked_before_the_first_call(make: Factory) -> None:
    assert make(20).usage(VTS) is None


def test_the_first_call_on_a_key_starts_at_once(make: Factory) -> None:
    assert make(20).acquire(VTS, _deadline()).wait_s == 0.0


def test_calls_in_a_row_are_spaced_by_the_interval(make: Factory) -> None:
    budget = make(50)
    started = time.monotonic()
    for _ in range(11):
        budget.acquire(VTS, _deadline())
    assert time.monotonic() - started >= 10 * BudgetPolicy(50).interval - 0.01


def test_a_slot_past_the_deadline_is_refused_at_once_and_books_nothing(make: Factory) -> None:
    budget = make(2)
    budget.acquire(VTS, _deadline())
    started = time.monotonic()
    with pytest.raises(CallBudgetExhaustedError) as refused:
        budget.acquire(VTS, _deadline(0.2))
    assert time.monotonic() - started < 0.15, "the refusal did not wait"
    assert isinstance(refused.value, RateLimitedError)
    assert refused.value.exit_code == 5
    assert 0.3 < refused.value.queue_s <= BudgetPolicy(2).interval + 0.01
    assert "booked" in str(refused.value)
    assert "queued" in str(refused.value)
    # The refused call took no slot: the next one gets the slot the refused one was offered.
    waited = budget.acquire(VTS, _deadline()).wait_s
    assert waited <= refused.value.queue_s + 0.01


def test_egw00201_holds_every_later_booking_back(make: Factory) -> None:
    budget = make(50)
    budget.acquire(VTS, _deadline())
    budget.rate_limited(VTS, 0.3)
    assert budget.acquire(VTS, _deadline()).wait_s >= 0.25
    usage = budget.usage(VTS)
    assert usage is not None
    assert usage.slowed


def test_a_reported_answer_spaces_the_call_one_window_later_from_it(make: Factory) -> None:
    """Released late (as if KIS got it late), the first of 2 calls a second pushes the third back."""
    budget = make(2)
    first = budget.acquire(VTS, _deadline())
    time.sleep(0.3)
    budget.release(VTS, first)
    budget.release(VTS, budget.acquire(VTS, _deadline()))
    third = budget.acquire(VTS, _deadline())
    assert third.wait_s > 0
    assert third.slot - first.slot >= 1.3 - 0.01


def test_usage_reports_the_limit_the_last_second_and_the_queue(make: Factory) -> None:
    budget = make(50)
    for _ in range(3):
        budget.acquire(VTS, _deadline())
    usage = budget.usage(VTS)
    assert usage is not None
    assert usage.limit_per_s == 50
    assert 1 <= usage.used_last_s <= 3
    assert usage.queue >= 0
    assert usage.queue_s >= 0
    assert not usage.slowed


def test_keys_and_modes_have_budgets_of_their_own(make: Factory) -> None:
    budget = make(1)
    budget.acquire(VTS, _deadline())
    assert budget.acquire(REAL, _deadline()).wait_s == 0.0
    assert budget.usage(BrokerScope(Mode.VTS, fingerprint("PSvts-key-two"))) is None


def test_budgets_on_one_location_share_the_key(make: Factory) -> None:
    one, two = make(2), make(2)
    if not one.shared:
        pytest.skip("an in-process budget is shared by the threads of one runtime only")
    one.acquire(VTS, _deadline())
    assert two.acquire(VTS, _deadline()).wait_s >= BudgetPolicy(2).interval - 0.05


def test_threads_asking_together_each_get_a_fair_share(make: Factory) -> None:
    budget = make(40)
    counts = [0] * 4
    stop = time.monotonic() + 1.5

    def work(i: int) -> None:
        while time.monotonic() < stop:
            budget.release(VTS, budget.acquire(VTS, _deadline()))
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fair = sum(counts) / 4
    assert sum(counts) <= 1.5 * 40 + 5
    assert min(counts) >= 0.5 * fair, counts
