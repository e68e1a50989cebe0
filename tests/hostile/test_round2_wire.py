"""Round 2, class 6 (wire odds), and class 3's jti rule inside the runtime.

- ``1e999`` is refused like ``NaN``/``Infinity``; so are 5000-digit numbers and deep nesting,
  in a tokenP answer and in a call's answer, as MalformedResponseError (property-tested on the
  one bounded reader too).
- A gzip bomb of a few hundred bytes does not grow past the body cap (urllib3 >= 2.8.0 bounds
  decompression under ``stream(amt)``; the floor is pinned in pyproject and CI runs it).
- Every token entering memory has its ``jti`` checked, whatever its source: a broker or a store
  handing out a token of another key is refused.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.support import FakeBroker
from runtime import safejson
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.bootstrap import build_http
from runtime.broker.base import AccessToken, AppCredentials, BrokerRequest, BrokerScope, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.broker.kis.transport import MAX_BODY_BYTES
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.errors import ForeignTokenError, MalformedResponseError
from runtime.masking import fingerprint
from tests.hostile.drip import DripServer, Script
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, jwt, token_reply
from tests.support.scripted_kis import APP_KEY, APP_SECRET, fresh_token


def _within(seconds: float) -> Deadline:
    """A deadline ``seconds`` from now on the real clock (the adapter's port takes a Deadline)."""
    return Deadline.after(SystemClock(), seconds)


def _price() -> BrokerRequest:
    return BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS)


def _answer(body: bytes, *, headers: bytes = b"content-type: application/json\r\n") -> Script:
    head = b"HTTP/1.1 200 OK\r\n" + headers + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    return lambda: iter([head + body])


@pytest.fixture
def adapter_for() -> Iterator[list[DripServer]]:
    servers: list[DripServer] = []
    yield servers
    for server in servers:
        server.close()


def _adapter(servers: list[DripServer], script: Script) -> KISBrokerAdapter:
    server = DripServer(script, pause_s=0)
    servers.append(server)
    return KISBrokerAdapter(Mode.VTS, AppCredentials(APP_KEY, APP_SECRET), build_http(), base_url=server.url)


def _token_body(**overrides: object) -> str:
    payload = token_reply(APP_KEY, datetime.now(UTC))
    text = json.dumps(payload)
    for name, raw in overrides.items():
        text = text.replace(json.dumps(name) + ": " + json.dumps(payload[name]), f'"{name}": {raw}')
    return text


ODD_NUMBERS = {
    "1e999": "1e999",
    "-1e999": "-1e999",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "5000 digits": "9" * 5000,
    "long fraction": "1." + "5" * 5000,
}


@pytest.mark.parametrize("odd", list(ODD_NUMBERS))
def test_odd_numbers_in_a_tokenp_answer_are_malformed(odd: str, adapter_for: list[DripServer]) -> None:
    body = _token_body(expires_in=ODD_NUMBERS[odd]).encode()
    adapter = _adapter(adapter_for, _answer(body))
    with pytest.raises(MalformedResponseError):
        adapter.issue_token(deadline=_within(3))


@pytest.mark.parametrize("odd", list(ODD_NUMBERS))
def test_odd_numbers_in_a_call_answer_are_malformed(odd: str, adapter_for: list[DripServer]) -> None:
    body = (
        b'{"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "ok", "output": {"x": '
        + ODD_NUMBERS[odd].encode()
        + b"}}"
    )
    adapter = _adapter(adapter_for, _answer(body))
    token = fresh_token(adapter.scope)
    with pytest.raises(MalformedResponseError):
        adapter.send(
            BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS), token, deadline=_within(3)
        )


def test_deep_nesting_in_a_call_answer_is_malformed(adapter_for: list[DripServer]) -> None:
    body = b'{"rt_cd": "0", "output": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    adapter = _adapter(adapter_for, _answer(body))
    token = fresh_token(adapter.scope)
    with pytest.raises(MalformedResponseError):
        adapter.send(
            BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS), token, deadline=_within(5)
        )


def test_a_gzip_bomb_stops_at_the_body_cap(adapter_for: list[DripServer]) -> None:
    bomb = gzip.compress(b'{"rt_cd": "0", "pad": "' + b"0" * (64 * 1024 * 1024) + b'"}', compresslevel=9)
    assert len(bomb) < 512 * 1024
    adapter = _adapter(
        adapter_for, _answer(bomb, headers=b"content-type: application/json\r\ncontent-encoding: gzip\r\n")
    )
    token = fresh_token(adapter.scope)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedResponseError, match="larger than"):
            adapter.send(_price(), token, deadline=_within(10))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MAX_BODY_BYTES, f"peak {peak / 2**20:.0f} MiB for a {len(bomb)}-byte answer"


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_the_bounded_reader_returns_json_or_refuses_typed(value: object) -> None:
    text = json.dumps(value)  # may hold NaN/Infinity or huge numbers: refused, never raised otherwise
    try:
        parsed = safejson.loads(text)
    except safejson.JSONRefused:
        return
    assert json.dumps(parsed) == text


# --- jti on every token entering memory ----------------------------------------------------------


class ForeignBroker(FakeBroker):
    """A broker (or a man in the middle) handing out a token whose jti names another key."""

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        now = self._clock.now()
        return AccessToken(
            value=jwt("PSanother000000000000000000000000001", now),
            token_type="Bearer",
            expires_at=now + timedelta(hours=24),
            issued_at=now,
            scope=self.scope,
        )


def test_a_broker_token_of_another_key_never_enters_memory() -> None:
    clock = SystemClock()
    broker = ForeignBroker(clock, app_key=APP_KEY)
    cache = TokenCache(broker, InMemoryTokenStore(), clock)
    with pytest.raises(ForeignTokenError):
        cache.get(deadline=_within(2))
    assert cache.peek() is None


class PlantingStore(InMemoryTokenStore):
    """A store (any technology) that hands back a token planted by someone else."""

    def __init__(self, planted: AccessToken) -> None:
        super().__init__()
        self._planted = planted

    def load(self, scope: BrokerScope) -> AccessToken | None:
        return self._planted


def test_a_store_token_of_the_other_mode_never_enters_memory() -> None:
    clock = SystemClock()
    broker = FakeBroker(clock, app_key=APP_KEY)
    scope = BrokerScope(Mode.VTS, fingerprint(APP_KEY))
    now = clock.now()
    planted = AccessToken(
        value=jwt("PSreal000000000000000000000000000001", now),  # the REAL key's token
        token_type="Bearer",
        expires_at=now + timedelta(hours=23),
        issued_at=now,
        scope=scope,
    )
    cache = TokenCache(broker, PlantingStore(planted), clock)

    token = cache.get(deadline=_within(2))

    assert token.value != planted.value, "the planted token was refused: a new one was issued"
    assert broker.issue_calls == 1
    assert cache.peek() == token
