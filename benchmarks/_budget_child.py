"""Child process of ``shared_budget.py``: one runtime on the key, calling inquire-price as fast as it may.

Usage: ``python _budget_child.py SECONDS READY GO OUT``; settings come from the environment
(KIS_*, QTS_TOKEN_STORE, QTS_MAX_RPS). Takes its token, touches READY, waits for GO, calls for
SECONDS from the moment GO names (a time.monotonic() value: one clock for every process of the
host), then writes to OUT: when each successful call returned, errors by type, each budget wait.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from runtime.auth.ports import Booking, BudgetUsage, CallBudgetPort
from runtime.bootstrap import build_call_budget, build_runtime
from runtime.broker.base import BrokerScope
from runtime.config import load_settings
from runtime.deadline import Deadline
from runtime.errors import QTSError

PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"


class RecordingBudget:
    """The runtime's budget, recording every wait it hands out. Implements CallBudgetPort."""

    def __init__(self, inner: CallBudgetPort) -> None:
        self.inner = inner
        self.waits: list[float] = []

    @property
    def shared(self) -> bool:
        return self.inner.shared

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        booking = self.inner.acquire(scope, deadline)
        self.waits.append(booking.wait_s)
        return booking

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        self.inner.release(scope, booking)

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        self.inner.rate_limited(scope, retry_after_s)

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        return self.inner.usage(scope)


def main() -> int:
    seconds, ready, go, out = float(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    settings = load_settings()
    limit = settings.calls_per_second
    budget = RecordingBudget(build_call_budget(settings.token_store, limit))
    returned: list[float] = []
    errors: dict[str, int] = {}
    with build_runtime(settings, call_budget=budget) as kis:
        kis.access_token()
        ready.touch()
        while not go.exists():  # the parent renames it into place with its content
            time.sleep(0.001)
        end = float(go.read_text()) + seconds
        params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
        while time.monotonic() < end:
            try:
                kis.call("GET", PRICE, tr_id="FHKST01010100", params=params)
                returned.append(time.monotonic())
            except QTSError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    out.write_text(json.dumps({"returned": returned, "errors": errors, "waits": budget.waits}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
