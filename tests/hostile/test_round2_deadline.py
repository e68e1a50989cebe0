"""Round 2, class 1: the deadline is per call, not per read.

A raw socket on 127.0.0.1 drips its answer: one byte every 0.3 s in the status line, the
headers, a known-length body or a chunked body; endless ``100 Continue``; endless trailers.
urllib3's read timeout (per socket read) never trips on any of them. Every tokenP, GET and
revokeP must still end within its deadline (+0.5 s) in wall time, typed, and an answer
completed after the deadline must not be used (a late tokenP answer is never cached).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, BrokerRequest, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.broker.kis.transport import MAX_HEADER_BYTES
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.errors import BrokerUnavailableError, MalformedResponseError
from runtime.settings import Settings
from tests.hostile.drip import DRIP_S, DripServer, Script
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, recorded, token_reply
from tests.support.scripted_kis import APP_KEY, APP_SECRET, fresh_token

DEADLINE_S = 1.5
SLACK_S = 0.5  # the promise: deadline + 0.5 s of wall time


def _within(seconds: float) -> Deadline:
    """A deadline ``seconds`` from now on the real clock (the adapter's port takes a Deadline)."""
    return Deadline.after(SystemClock(), seconds)


def _bytes(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def _answer(path: str) -> bytes:
    if path == "token":
        payload = token_reply(APP_KEY, datetime.now(UTC))
    elif path == "revoke":
        payload = {"code": 200, "message": "ok"}
    else:
        payload = recorded("inquire_price_success")
    return json.dumps(payload).encode()


def _head(length: int | None = None, *, chunked: bool = False) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"content-type: application/json; charset=utf-8"]
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    elif length is not None:
        lines.append(b"content-length: " + str(length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def slow_status_line(path: str) -> Script:
    body = _answer(path)
    return lambda: _bytes(_head(len(body)) + body)


def slow_headers(path: str) -> Script:
    body = _answer(path)

    def script() -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\n"
        yield from _bytes(b"content-type: application/json\r\nx-pad: " + b"a" * 40 + b"\r\n")
        yield b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    return script


def slow_known_length_body(path: str) -> Script:
    body = _answer(path)

    def script() -> Iterator[bytes]:
        yield _head(len(body))
        yield from _bytes(body)

    return script


def slow_chunked_body(path: str) -> Script:
    body = _answer(path)

    def script() -> Iterator[bytes]:
        yield _head(chunked=True)
        for i in range(0, len(body), 8):
            piece = body[i : i + 8]
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    return script


def endless_continue(path: str) -> Script:
    def script() -> Iterator[bytes]:
        while True:
            yield b"HTTP/1.1 100 Continue\r\n\r\n"

    return script


def endless_trailers(path: str) -> Script:
    body = _answer(path)

    def script() -> Iterator[bytes]:
        yield _head(chunked=True) + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n"
        n = 0
        while True:
            n += 1
            yield f"x-trailer-{n}: {'t' * 20}\r\n".encode()

    return script


ATTACKS: dict[str, tuple[Callable[[str], Script], float]] = {
    "slow status line": (slow_status_line, DRIP_S),
    "slow headers": (slow_headers, DRIP_S),
    "slow known-length body": (slow_known_length_body, DRIP_S),
    "slow chunked body": (slow_chunked_body, DRIP_S),
    "endless 100 Continue": (endless_continue, 0.05),
    "endless trailers": (endless_trailers, 0.1),
}


def _timed(action: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        action()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.parametrize("endpoint", ["token", "call", "revoke", "approval"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_exchange_ends_within_its_deadline_whatever_the_server_drips(
    attack: str, endpoint: str, adapter_for: Callable[[str], KISBrokerAdapter]
) -> None:
    make_script, pause = ATTACKS[attack]
    server = DripServer(make_script(endpoint), pause_s=pause)
    try:
        adapter = adapter_for(server.url)
        token = fresh_token(adapter.scope)
        actions: dict[str, Callable[[], object]] = {
            "token": lambda: adapter.issue_token(deadline=_within(DEADLINE_S)),
            "call": lambda: adapter.send(
                BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS),
                token,
                deadline=_within(DEADLINE_S),
            ),
            "revoke": lambda: adapter.revoke_token(token, deadline=_within(DEADLINE_S)),
            "approval": lambda: adapter.issue_approval_key(deadline=_within(DEADLINE_S)),
        }
        error, elapsed = _timed(actions[endpoint])
    finally:
        server.close()
    assert isinstance(error, BrokerUnavailableError), f"{attack}: got {error!r}"
    assert elapsed <= DEADLINE_S + SLACK_S, f"{attack} on {endpoint} took {elapsed:.2f} s"
    assert server.requests >= 1, "the attack was actually served"


def test_a_tokenp_answer_completed_after_the_deadline_is_not_cached() -> None:
    """The whole answer arrives, but 0.3 s per byte of the status line: far past the 1.5 s."""
    server = DripServer(slow_status_line("token"))
    settings = Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, APP_SECRET),
        base_url=server.url,
        call_deadline_s=DEADLINE_S,
        wait_on_rate_limit=False,
    )
    try:
        with build_runtime(settings, store=InMemoryTokenStore()) as runtime:
            error, elapsed = _timed(runtime.access_token)
            assert isinstance(error, BrokerUnavailableError)
            assert elapsed <= DEADLINE_S + SLACK_S
            assert runtime.cache.peek() is None, "nothing that arrives after the deadline is used"
    finally:
        server.close()


def test_a_whole_call_through_the_runtime_keeps_to_its_deadline() -> None:
    """tokenP is answered at once; the call then drips its body: the call as a whole keeps 1.5 s."""
    body = _answer("token")
    price = _answer("call")

    class Router(DripServer):
        def script_for(self, head: bytes) -> Script:
            if b"tokenP" in head:
                return lambda: iter([_head(len(body)) + body])
            return lambda: _bytes(_head(len(price)) + price)

    server = Router(lambda: iter(()))
    settings = Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, APP_SECRET),
        base_url=server.url,
        call_deadline_s=DEADLINE_S,
        wait_on_rate_limit=False,
    )
    try:
        with build_runtime(settings, store=InMemoryTokenStore()) as runtime:
            error, elapsed = _timed(
                lambda: runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)
            )
    finally:
        server.close()
    assert isinstance(error, BrokerUnavailableError), repr(error)
    assert elapsed <= DEADLINE_S + SLACK_S, f"took {elapsed:.2f} s"


def test_headers_over_the_total_cap_are_refused(adapter_for: Callable[[str], KISBrokerAdapter]) -> None:
    """90 headers of 60 KiB each pass http.client's own limits (100 headers, 64 KiB a line)."""
    body = _answer("call")

    def script() -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        yield b"tr_cont: " + b"M" * (60 * 1024) + b"\r\n"
        for n in range(3):
            yield f"x-big-{n}: ".encode() + b"b" * (60 * 1024) + b"\r\n"
        yield b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    server = DripServer(script, pause_s=0)
    try:
        adapter = adapter_for(server.url)
        token = fresh_token(adapter.scope)
        request = BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS)
        with pytest.raises(MalformedResponseError, match="headers"):
            adapter.send(request, token, deadline=_within(5))
    finally:
        server.close()
    assert MAX_HEADER_BYTES < 60 * 1024


@pytest.mark.parametrize(
    ("count", "size"),
    [(1, 20 * 1024), (70, 16), (30, 1500)],
    ids=["one 20 KiB tr_cont", "70 headers", "30 headers of 1.5 KiB (45 KiB)"],
)
def test_a_long_header_many_headers_or_too_much_in_all_never_reach_the_caller(
    adapter_for: Callable[[str], KISBrokerAdapter], count: int, size: int
) -> None:
    body = _answer("call")

    def script() -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        for n in range(count):
            yield f"tr_cont{n or ''}: ".encode() + b"M" * size + b"\r\n"
        yield b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    server = DripServer(script, pause_s=0)
    try:
        adapter = adapter_for(server.url)
        request = BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS)
        with pytest.raises(MalformedResponseError, match="headers"):
            adapter.send(request, fresh_token(adapter.scope), deadline=_within(5))
    finally:
        server.close()
