"""What every call budget adapter does the same way: the deadline rule and the refusal."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import timedelta

from runtime.auth.call_budget.gcra import BudgetPolicy, BudgetState, Refusal, usage
from runtime.auth.ports import BudgetUsage, CallBudgetPort, ClockPort
from runtime.broker.base import BrokerScope
from runtime.deadline import Deadline
from runtime.errors import CallBudgetExhaustedError, TokenStoreError

__all__ = ["BudgetStateUnavailable", "go_when_clear", "max_wait", "refused", "usage_of", "usages_of"]

# A call at its slot asks at most this often whether it may go (an earlier one about to go out
# makes it ask again after 2 ms).
_START_TRIES = 1000

# A slot is only booked if the call keeps some time for itself after it: a slot the call would
# reach with nothing left is a slot taken from another process for nothing.
_SEND_SHARE = 0.1
_SEND_MARGIN_S = 0.05


class BudgetStateUnavailable(TokenStoreError):
    """The shared budget's state (file, Redis) cannot be reached; the caller falls back."""


def max_wait(deadline: Deadline) -> float:
    """The longest wait for a slot that still leaves the call time to be sent."""
    left = deadline.remaining()
    return left - min(_SEND_MARGIN_S, left * _SEND_SHARE)


def refused(refusal: Refusal, policy: BudgetPolicy, deadline: Deadline) -> CallBudgetExhaustedError:
    """The error for a call whose first possible slot lies past its deadline."""
    return CallBudgetExhaustedError(
        f"the key's call budget ({policy.limit_per_s:g}/s, shared by every process on the key) is "
        f"booked {refusal.wait:.2f} s ahead ({refusal.ahead} calls queued), more than the "
        f"{deadline.remaining():.2f} s left before this call's deadline; nothing was sent",
        retry_after=timedelta(seconds=math.ceil(refusal.wait * 100) / 100),
        queue=refusal.ahead,
    )


def usage_of(state: BudgetState | None, now: float) -> BudgetUsage | None:
    """What ``qts status`` shows for ``state`` at ``now``."""
    if state is None:
        return None
    used, queue, queue_s = usage(state, now)
    return BudgetUsage(
        limit_per_s=state.limit_per_s,
        used_last_s=used,
        queue=queue,
        queue_s=round(queue_s, 3),
        slowed=now < state.slow_until,
    )


_ReadAll = Callable[[Sequence[BrokerScope]], list[BudgetUsage | None]]


def usages_of(budget: CallBudgetPort, scopes: Sequence[BrokerScope]) -> list[BudgetUsage | None]:
    """Each scope's usage, read only: in one batch where the adapter offers ``usages`` (the file
    budget lists its folder once, Redis answers in one round trip), else one ``usage`` a scope.

    Not a port method: a batch is an optimisation of ``qts status``, and ``usage`` says it all."""
    read_all: _ReadAll | None = getattr(budget, "usages", None)
    if read_all is not None:
        return read_all(scopes)
    return [budget.usage(scope) for scope in scopes]


def go_when_clear(
    try_start: Callable[[], float],
    clock: ClockPort,
    deadline: Deadline,
    policy: BudgetPolicy,
    give_back: Callable[[], None],
) -> float:
    """At the booked slot: ask ``try_start`` (seconds still to wait, 0 = started) until it says go.

    Returns the extra seconds waited. A wait past the deadline gives the slot back (``give_back``)
    and raises CallBudgetExhaustedError; after many tries the call goes anyway (the rule rests on
    reports from other processes, which a crashed one never sends)."""
    extra = 0.0
    for _ in range(_START_TRIES):
        wait = try_start()
        if wait <= 0.0:
            return extra
        if wait > max_wait(deadline):
            give_back()
            raise refused(Refusal(wait, 0), policy, deadline)
        clock.sleep(wait)
        extra += wait
    return extra
