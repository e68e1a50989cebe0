"""RedisCallBudget: the key's budget shared by every host on one Redis server.

One Lua script does every step atomically on the server, on Redis's own clock (``TIME``), so
hosts need no synchronised clocks: the script answers "your slot is in W seconds" and each host
sleeps W on its own clock. It runs the rules of :mod:`.gcra` (book ``max(now, tat)``, move ``tat``
one interval on, refuse without booking past the caller's wait, push ``tat`` forward and slow
down after EGW00201). The state is one JSON string per key, ``<prefix>:budget:<MODE>:<fp>``,
that expires once nothing is booked. A corrupt state is reset by the script, which says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
import redis.exceptions

from runtime.auth.call_budget._common import BudgetStateUnavailable, go_when_clear, max_wait, refused
from runtime.auth.call_budget.gcra import (
    ABANDONED_S,
    HORIZON_S,
    QUEUE_POLL_S,
    SAME_SLOT_S,
    SLOW_FACTOR,
    SLOW_FOR_S,
    STARTS_KEPT,
    UNREPORTED_S,
    WAITING_KEPT_S,
    BudgetPolicy,
    Refusal,
)
from runtime.auth.ports import Booking, BudgetUsage, ClockPort
from runtime.broker.base import BrokerScope
from runtime.deadline import Deadline

__all__ = ["RedisCallBudget"]

_log = logging.getLogger(__name__)

# KEYS[1]: the state. ARGV: op ("book" | "start" | "release" | "penalize" | "peek"), then for book:
# interval (s), max wait (s), limit per s, calls per KIS second; start: the slot, calls per KIS
# second; release: the slot; penalize: the hold (s). Returns {ok (0/1), wait (s), calls ahead, used
# last s, slot free in (s), limit, slowed (0/1), reset (0/1), slot}; "ok" is booked for book (2:
# booked at a slot free now and started, as "start" would at once) and started for start. Floats
# leave Lua as strings: Redis would truncate numbers to integers.
_SCRIPT = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]
local raw = redis.call('GET', KEYS[1])
local s, reset = nil, 0
if raw then
  local ok, d = pcall(cjson.decode, raw)
  if ok and type(d) == 'table' and type(d.tat) == 'number' and type(d.slow_until) == 'number'
     and type(d.limit) == 'number' and type(d.starts) == 'table' and type(d.sent) == 'table'
     and type(d.done) == 'table' and #d.starts == #d.done and #d.starts == #d.sent
     and d.tat - now <= {HORIZON_S} then
    s = d
  else
    reset = 1
  end
end
if not s then s = {{tat = now, starts = {{}}, sent = {{}}, done = {{}}, slow_until = 0, limit = 0}} end
local function arrived_by(i)
  if s.done[i] > 0 then return s.done[i] end
  if s.sent[i] > 0 then return s.sent[i] + {UNREPORTED_S} end
  return s.starts[i] + {UNREPORTED_S}
end
local function floor_of(list, per_window)
  if #list < per_window then return -1 end
  table.sort(list)
  return list[#list - per_window + 1] + 1 + {SAME_SLOT_S}
end
local function index_of(slot)
  local best, best_gap = nil, {SAME_SLOT_S}
  for i = #s.starts, 1, -1 do
    local gap = math.abs(s.starts[i] - slot)
    if gap < best_gap then best, best_gap = i, gap end
  end
  return best
end
local function try_start(mine, per_window)
  local latest = {{}}
  for i = 1, #s.starts do
    if i ~= mine and (s.sent[i] > 0 or s.done[i] > 0) then table.insert(latest, arrived_by(i)) end
  end
  local floor = floor_of(latest, per_window)
  if floor > now then return 0, floor - now end
  for i = 1, mine - 1 do
    if s.sent[i] == 0 and s.done[i] == 0 and s.starts[i] > now - {ABANDONED_S} then
      return 0, {QUEUE_POLL_S}
    end
  end
  s.sent[mine] = now
  return 1, 0
end
local starts, sent, done, used, ahead = {{}}, {{}}, {{}}, 0, 0
for i = 1, #s.starts do
  if type(s.starts[i]) == 'number' and type(s.sent[i]) == 'number' and type(s.done[i]) == 'number'
     and (math.max(arrived_by(i), s.starts[i]) > now - 1
          or (s.sent[i] == 0 and s.done[i] == 0 and s.starts[i] > now - {WAITING_KEPT_S})) then
    table.insert(starts, s.starts[i])
    table.insert(sent, s.sent[i])
    table.insert(done, s.done[i])
    if s.starts[i] > now then ahead = ahead + 1 elseif s.starts[i] > now - 1 then used = used + 1 end
  end
end
s.starts, s.sent, s.done = starts, sent, done
local ok, wait, slot, changed = 0, 0, 0, reset
if op == 'book' then
  local interval, max_wait, limit, per_window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
    tonumber(ARGV[5])
  local latest = {{}}
  for i = 1, #s.starts do latest[i] = arrived_by(i) end
  slot = math.max(now, s.tat, floor_of(latest, per_window))
  wait = slot - now
  if wait <= max_wait then
    if now < s.slow_until then interval = interval * {SLOW_FACTOR} end
    table.insert(s.starts, slot)
    table.insert(s.sent, 0)
    table.insert(s.done, 0)
    while #s.starts > {STARTS_KEPT} do
      table.remove(s.starts, 1)
      table.remove(s.sent, 1)
      table.remove(s.done, 1)
    end
    s.tat = slot + interval
    s.limit = limit
    ok, changed = 1, 1
    -- A slot free now starts in the same script: one round trip for an uncontended call.
    if wait == 0 and try_start(#s.starts, per_window) == 1 then ok = 2 end
  end
elseif op == 'start' then
  slot = tonumber(ARGV[2])
  local mine = index_of(slot)
  ok = 1
  if mine then
    ok, wait = try_start(mine, tonumber(ARGV[3]))
    if ok == 1 then changed = 1 end
  end
elseif op == 'release' then
  local mine = index_of(tonumber(ARGV[2]))
  if mine then
    if s.sent[mine] == 0 then s.sent[mine] = now end
    s.done[mine] = now
    changed = 1
  end
elseif op == 'penalize' then
  s.tat = math.max(s.tat, now + tonumber(ARGV[2]))
  s.slow_until = math.max(s.slow_until, now + {SLOW_FOR_S})
  changed = 1
end
if changed == 1 then
  local ttl = math.ceil(math.max(s.tat, s.slow_until) - now) + 60
  redis.call('SET', KEYS[1], cjson.encode(s), 'EX', ttl)
end
local slowed = 0
if now < s.slow_until then slowed = 1 end
return {{ok, string.format('%.6f', wait), ahead, used, string.format('%.6f', math.max(s.tat - now, 0)),
        tostring(s.limit), slowed, reset, string.format('%.6f', slot)}}
"""


class RedisCallBudget:
    """GCRA state per scope in Redis, booked by one Lua script. Implements CallBudgetPort.

    ``client`` should have short socket timeouts: while Redis does not answer, no call starts
    (:class:`~.fallback.FallbackCallBudget` goes local after the first failure).
    """

    def __init__(
        self, client: redis.Redis, clock: ClockPort, limit_per_s: float, *, prefix: str = "qts"
    ) -> None:
        self._client = client
        self._clock = clock
        self._policy = BudgetPolicy(limit_per_s)
        self._prefix = prefix
        self._script = client.register_script(_SCRIPT)

    @classmethod
    def from_url(cls, url: str, clock: ClockPort, limit_per_s: float, **options: Any) -> RedisCallBudget:
        """A budget on the server ``url`` names; connects lazily. Raises ValueError for a bad URL."""
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return cls(client, clock, limit_per_s, **options)

    @property
    def shared(self) -> bool:
        return True

    @property
    def policy(self) -> BudgetPolicy:
        return self._policy

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        policy = self._policy
        reply = self._run(
            scope, "book", policy.interval, max_wait(deadline), policy.limit_per_s, policy.per_window
        )
        wait = float(reply[1])
        booked = int(reply[0])
        if not booked:
            raise refused(Refusal(wait, int(reply[2])), self._policy, deadline)
        booking = Booking(wait, float(reply[8]))
        if booked == 2:
            return booking  # free now and started by the same script: one round trip
        self._clock.sleep(wait)
        extra = go_when_clear(
            lambda: float(self._run(scope, "start", booking.slot, policy.per_window)[1]),
            self._clock,
            deadline,
            policy,
            lambda: self.release(scope, booking),
        )
        return Booking(wait + extra, booking.slot)

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        try:
            self._run(scope, "release", booking.slot)
        except BudgetStateUnavailable as exc:
            _log.debug("could not report a call's answer to the budget of %s: %s", scope, exc)

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        try:
            self._run(scope, "penalize", retry_after_s)
        except BudgetStateUnavailable as exc:
            _log.warning("could not slow the shared call budget for %s: %s", scope, exc)

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        return _usage_from(self._run(scope, "peek"))

    def usages(self, scopes: Sequence[BrokerScope]) -> list[BudgetUsage | None]:
        """:meth:`usage` of every scope in one round trip (``qts status`` over many keys); a
        scope whose answer is unusable reads as None. BudgetStateUnavailable if Redis is not."""
        pipe = self._client.pipeline(transaction=False)
        for scope in scopes:
            key = f"{self._prefix}:budget:{scope.mode.value}:{scope.key_fingerprint}"  # as _run names it
            self._script(keys=[key], args=["peek"], client=pipe)
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as exc:
            raise BudgetStateUnavailable(
                f"the Redis call budget is unreachable: {type(exc).__name__}"
            ) from exc
        found: list[BudgetUsage | None] = []
        for scope, reply in zip(scopes, replies, strict=True):
            if not isinstance(reply, list) or len(reply) != 9:
                found.append(None)
                continue
            if int(reply[7]):
                _log.warning("the call budget of %s in Redis was unreadable; started afresh", scope)
            found.append(_usage_from(reply))
        return found

    def _run(self, scope: BrokerScope, op: str, *numbers: float) -> list[Any]:
        key = f"{self._prefix}:budget:{scope.mode.value}:{scope.key_fingerprint}"
        try:
            reply = self._script(keys=[key], args=[op, *(repr(float(n)) for n in numbers)])
        except redis.exceptions.RedisError as exc:
            raise BudgetStateUnavailable(
                f"the Redis call budget is unreachable: {type(exc).__name__}"
            ) from exc
        if not isinstance(reply, list) or len(reply) != 9:
            raise BudgetStateUnavailable("the Redis call budget script answered something unexpected")
        if int(reply[7]):
            _log.warning("the call budget of %s in Redis was unreadable; started afresh", scope)
        return reply


def _usage_from(reply: list[Any]) -> BudgetUsage | None:
    """What a "peek" answer says, or None when nothing was ever booked (or the state expired)."""
    limit = float(reply[5])
    if limit <= 0:
        return None
    return BudgetUsage(
        limit_per_s=limit,
        used_last_s=int(reply[3]),
        queue=int(reply[2]),
        queue_s=round(float(reply[4]), 3),
        slowed=bool(int(reply[6])),
    )
