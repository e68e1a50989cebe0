"""A process killed in the middle of a tokenP does not cost the next one an EGW00133.

The ledger notes a tokenP when it is *sent*; KIS may count its minute from its answer, a few
seconds later. build_runtime spaces tokenP across processes by the minute plus ISSUE_MARGIN.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from runtime.auth.budget import ISSUE_INTERVAL, ISSUE_MARGIN, MAX_WAIT
from runtime.auth.ports import IssuanceLedger
from runtime.auth.stores.file import FileTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AccessToken, AppCredentials
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.settings import Settings
from tests.support.fakes import FakeBroker

KEY = "PSfake00000000000000000000000000001"


class TimedBroker(FakeBroker):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, app_key=KEY)
        self.sent_at: list[float] = []

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        self.sent_at.append(self._clock.monotonic())
        return super().issue_token(deadline=deadline)


def test_the_next_tokenp_after_a_killed_send_waits_the_minute_plus_a_margin(tmp_path: Path) -> None:
    assert timedelta(seconds=5) <= ISSUE_MARGIN
    clock = FakeClock()
    store = FileTokenStore(tmp_path / "qts")
    broker = TimedBroker(clock)
    # A process wrote the ledger, sent tokenP and was killed before it could save the token.
    killed_send = clock.monotonic()
    store.save_ledger(broker.scope, IssuanceLedger(last_issued_at=clock.now()))
    kis_answered = killed_send + 3.0  # KIS counts its minute from here

    settings = Settings(
        mode=broker.scope.mode, credentials=AppCredentials(KEY, "secret"), base_url="http://127.0.0.1:9"
    )
    runtime = build_runtime(settings, clock=clock, store=store, broker=broker)
    runtime.cache.get(
        deadline=Deadline.after(clock, settings.call_deadline_s), budget_wait_s=MAX_WAIT.total_seconds()
    )

    (sent,) = broker.sent_at
    assert sent - killed_send >= (ISSUE_INTERVAL + ISSUE_MARGIN).total_seconds()
    assert sent - kis_answered >= ISSUE_INTERVAL.total_seconds(), "KIS would have answered EGW00133"
