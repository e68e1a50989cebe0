"""Reading many keys' budgets at once (``qts status``): the batch says what ``usage`` says, key by
key, for every budget (in-process, file, Redis, and each behind the fallback)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.auth.call_budget._common import BudgetStateUnavailable, usages_of
from runtime.auth.call_budget.fallback import FallbackCallBudget
from runtime.auth.call_budget.file import FileCallBudget
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.ports import CallBudgetPort
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from tests.support.redis import SKIP_REASON

CLOCK = SystemClock()
SCOPES = [BrokerScope(Mode.VTS if i % 2 else Mode.REAL, f"{i:012x}") for i in range(1, 41)]
BOOKED = SCOPES[::3]


def _redis(request: pytest.FixtureRequest) -> CallBudgetPort:
    if shutil.which("redis-server") is None:
        pytest.skip(SKIP_REASON)
    from runtime.auth.call_budget.redis import RedisCallBudget

    url = request.getfixturevalue("redis_url")
    return RedisCallBudget.from_url(url, CLOCK, 1000.0, prefix=f"usages-{uuid.uuid4().hex}")


MAKERS: dict[str, Callable[[pytest.FixtureRequest], CallBudgetPort]] = {
    "memory": lambda _r: InProcessCallBudget(CLOCK, 1000.0),
    "file": lambda r: FileCallBudget(r.getfixturevalue("tmp_path") / "qts", CLOCK, 1000.0),
    "redis": _redis,
}


@pytest.fixture(params=[(name, wrapped) for name in sorted(MAKERS) for wrapped in (False, True)])
def budget(request: pytest.FixtureRequest) -> CallBudgetPort:
    name, wrapped = request.param
    inner = MAKERS[name](request)
    return FallbackCallBudget(inner, CLOCK, 1000.0) if wrapped else inner


def test_the_batch_reads_what_usage_reads_key_by_key(budget: CallBudgetPort) -> None:
    for scope in BOOKED:
        for _ in range(1 + SCOPES.index(scope) % 2):
            budget.acquire(scope, Deadline.after(CLOCK, 10.0))
    batch = usages_of(budget, SCOPES)
    one_by_one = [budget.usage(scope) for scope in SCOPES]
    assert [u is not None for u in batch] == [scope in BOOKED for scope in SCOPES]
    # Same keys, same limits and counts (the queue's seconds move with the clock between reads).
    assert [(u.limit_per_s, u.used_last_s, u.slowed) if u else None for u in batch] == [
        (u.limit_per_s, u.used_last_s, u.slowed) if u else None for u in one_by_one
    ]
    assert usages_of(budget, []) == []


def test_the_file_batch_skips_what_it_cannot_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    budget = FileCallBudget(tmp_path / "qts", CLOCK, 1000.0)
    good, corrupt, fifo, missing = SCOPES[:4]
    budget.acquire(good, Deadline.after(CLOCK, 10.0))
    budget.acquire(corrupt, Deadline.after(CLOCK, 10.0))
    budget.path_for(corrupt).write_text("{broken")
    os.mkfifo(budget.path_for(fifo), 0o600)  # planted: must neither block nor fail the batch
    found = budget.usages([good, corrupt, fifo, missing])
    assert found[0] is not None
    assert found[0].used_last_s == 1
    assert found[1:] == [None, None, None]
    assert "unreadable" in caplog.text
    assert FileCallBudget(tmp_path / "nowhere", CLOCK, 1.0).usages([good]) == [None]


def test_an_unreachable_redis_fails_the_batch_typed() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip(SKIP_REASON)
    from runtime.auth.call_budget.redis import RedisCallBudget

    budget = RedisCallBudget.from_url("redis://127.0.0.1:1/0", CLOCK, 1.0)
    with pytest.raises(BudgetStateUnavailable):
        budget.usages(SCOPES[:3])


def test_a_corrupt_redis_state_reads_as_none_with_a_warning(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip(SKIP_REASON)
    import redis

    from runtime.auth.call_budget.redis import RedisCallBudget

    url = request.getfixturevalue("redis_url")
    prefix = f"usages-{uuid.uuid4().hex}"
    budget = RedisCallBudget.from_url(url, CLOCK, 1000.0, prefix=prefix)
    good, corrupt = SCOPES[:2]
    budget.acquire(good, Deadline.after(CLOCK, 10.0))
    key = f"{prefix}:budget:{corrupt.mode.value}:{corrupt.key_fingerprint}"
    redis.Redis.from_url(url).set(key, "{broken")
    found = budget.usages([good, corrupt])
    assert found[0] is not None
    assert found[1] is None
    assert "unreadable" in caplog.text
