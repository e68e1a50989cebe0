"""Round 2, class 2: no 16-character fragment of a secret anywhere.

A gateway reflects part of the app secret, the app key or a token -- in ``msg1``,
``error_description`` or ``error_code``, URL-encoded, or inside a broken status line, header
line or chunk-size line. None of it may reach an exception's text or chain, a log record (ours
or urllib3's, which warns "Failed to parse headers ... unparsed data"), or ``qts -v``'s output.
The scrubber itself is checked as a property: any fragment of 16+ characters, in any text,
plain or percent-encoded, is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import scrub
from runtime.broker.base import AccessToken, AppCredentials, BrokerRequest, BrokerScope, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.errors import QTSError
from tests.hostile.drip import DripServer, Script
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, token_reply
from tests.support.scripted_kis import APP_KEY, APP_SECRET, exception_chain, fresh_token

FRAGMENT = 16
ROOT = Path(__file__).resolve().parents[2]


def _within(seconds: float) -> Deadline:
    """A deadline ``seconds`` from now on the real clock (the adapter's port takes a Deadline)."""
    return Deadline.after(SystemClock(), seconds)


def fragments_in(text: str, secret: str, n: int = FRAGMENT) -> list[str]:
    """Every ``n``-character piece of ``secret`` found in ``text`` (plain or URL-decoded)."""
    views = {text, unquote(text), unquote_plus(text)}
    return [
        secret[i : i + n] for i in range(len(secret) - n + 1) if any(secret[i : i + n] in v for v in views)
    ]


# --- the scrubber as a property -----------------------------------------------------------------

SECRET_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_."
TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="[]")


@st.composite
def echo(draw: st.DrawFn) -> tuple[str, str]:
    """A secret, and a text echoing a piece of it (16+ characters), maybe URL-encoded."""
    secret = draw(st.text(SECRET_CHARS, min_size=FRAGMENT, max_size=200))
    start = draw(st.integers(0, len(secret) - FRAGMENT))
    end = draw(st.integers(start + FRAGMENT, len(secret)))
    piece = secret[start:end]
    encoders: list[Callable[[str], str]] = [str, quote, quote_plus, lambda s: quote(s, safe="")]
    encode = draw(st.sampled_from(encoders))
    before = draw(st.text(TEXT_CHARS, max_size=40))
    after = draw(st.text(TEXT_CHARS, max_size=40))
    return secret, before + encode(piece) + after


@settings(max_examples=400, deadline=None)
@given(echo())
def test_no_fragment_of_16_characters_survives_the_scrubber(case: tuple[str, str]) -> None:
    secret, text = case
    grams = frozenset(secret[i : i + scrub.WINDOW] for i in range(len(secret) - scrub.WINDOW + 1))
    cleaned = scrub.scrub_with(text, grams)
    assert fragments_in(cleaned, secret) == []


@settings(max_examples=200, deadline=None)
@given(st.text(SECRET_CHARS, min_size=FRAGMENT, max_size=200), st.text(TEXT_CHARS, max_size=200))
def test_text_sharing_no_run_with_the_secret_is_left_alone(secret: str, text: str) -> None:
    grams = frozenset(secret[i : i + scrub.WINDOW] for i in range(len(secret) - scrub.WINDOW + 1))
    if any(text[i : i + scrub.WINDOW] in grams for i in range(len(text))):
        return  # shares a run: covered by the property above
    if any(decode(text) != text for decode in (unquote, unquote_plus)):
        return  # decoding may reveal one
    assert scrub.scrub_with(text, grams) == text


# --- hostile gateways over real sockets ---------------------------------------------------------

TOKEN = fresh_token(BrokerScope(Mode.VTS, AppCredentials(APP_KEY, APP_SECRET).fingerprint))


def _json_answer(status: int, payload: dict[str, object]) -> bytes:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n".encode()
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _raw(data: bytes) -> Script:
    return lambda: iter([data])


def _price_body() -> bytes:
    return json.dumps({"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "ok", "output": {}}).encode()


S = APP_SECRET
K = APP_KEY
T = TOKEN.value

ECHOES: dict[str, bytes] = {
    "msg1 cut of the secret": _json_answer(500, {"rt_cd": "1", "msg_cd": "EGW00105", "msg1": S[30:110]}),
    "msg1 URL-encoded secret": _json_answer(
        500, {"rt_cd": "1", "msg_cd": "EGW00105", "msg1": "secret=" + quote(S[50:130], safe="")}
    ),
    "msg1 form-encoded key": _json_answer(
        500, {"rt_cd": "1", "msg_cd": "EGW00103", "msg1": "k=" + quote_plus(K[3:30])}
    ),
    "msg1 token fragment": _json_answer(500, {"rt_cd": "1", "msg_cd": "EGW00121", "msg1": T[40:120]}),
    "error_code is a fragment": _json_answer(403, {"error_code": S[7:23], "error_description": "x"}),
    "error_description cut": _json_answer(
        403, {"error_code": "EGW00105", "error_description": "AppSecret " + S[100:180]}
    ),
    "broken status line": b"HTTP/1.1 2" + S[0:60].encode() + b"\r\ncontent-length: 2\r\n\r\n{}",
    "status reason": b"HTTP/1.1 500 " + S[60:140].encode() + b"\r\ncontent-length: 2\r\n\r\n{}",
    "broken header line": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + S[20:100].encode()
        + b"\r\nx-echo "
        + K.encode()
        + b"\r\ncontent-length: "
        + str(len(_price_body())).encode()
        + b"\r\n\r\n"
        + _price_body()
    ),
    "chunk-size line": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + S[90:170].encode()
        + b"\r\n"
    ),
    "header value echo": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-echo: "
        + quote(S[0:90], safe="").encode()
        + b"\r\ncontent-length: 5\r\n\r\n{nope"
    ),
}


def _leaks(texts: list[str]) -> list[str]:
    found = []
    for text in texts:
        for secret in (APP_SECRET, APP_KEY, TOKEN.value):
            found.extend(fragments_in(text, secret))
    return found


def _error_texts(exc: BaseException) -> list[str]:
    texts = []
    for link in exception_chain(exc):
        texts += [str(link), repr(link), repr(link.args)]
        texts += [repr(value) for value in vars(link).values()]
    return texts


@pytest.mark.parametrize("endpoint", ["token", "call", "revoke", "approval"])
@pytest.mark.parametrize("case", list(ECHOES))
def test_no_fragment_in_any_error_or_log_record(
    case: str,
    endpoint: str,
    adapter_for: Callable[[str], KISBrokerAdapter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = DripServer(_raw(ECHOES[case]), pause_s=0)
    try:
        adapter = adapter_for(server.url)
        calls: dict[str, Callable[[], object]] = {
            "token": lambda: adapter.issue_token(deadline=_within(3)),
            "call": lambda: adapter.send(
                BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS), TOKEN, deadline=_within(3)
            ),
            "revoke": lambda: adapter.revoke_token(TOKEN, deadline=_within(3)),
            "approval": lambda: adapter.issue_approval_key(deadline=_within(3)),
        }
        error: BaseException | None = None
        try:
            calls[endpoint]()
        except Exception as exc:  # typed or not, its text is what is audited
            error = exc
    finally:
        server.close()
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    logs = [formatter.format(record) for record in caplog.records]
    assert _leaks(logs) == [], f"{case}: {logs}"
    if error is None:
        assert endpoint == "revoke", "only revokeP takes an unknown-token answer as done"
        return
    assert _leaks(_error_texts(error)) == [], f"{case}: {error!r}"
    chain = list(exception_chain(error))
    assert all(isinstance(link, QTSError) for link in chain), f"a dependency's exception rides along: {chain}"


def test_urllib3_warning_about_unparsed_header_data_is_scrubbed(
    adapter_for: Callable[[str], KISBrokerAdapter], caplog: pytest.LogCaptureFixture
) -> None:
    """The broken header line is answered with a usable body: urllib3 only warns, with the data."""
    caplog.set_level(logging.DEBUG)
    server = DripServer(_raw(ECHOES["broken header line"]), pause_s=0)
    try:
        adapter = adapter_for(server.url)
        request = BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS)
        with contextlib.suppress(QTSError):  # either way: the point is the log
            adapter.send(request, TOKEN, deadline=_within(3))
    finally:
        server.close()
    warned = [r for r in caplog.records if r.name.startswith("urllib3") and r.levelno >= logging.WARNING]
    assert warned, "urllib3 warned about the header (the attack reached it)"
    formatter = logging.Formatter("%(message)s")
    assert _leaks([formatter.format(r) for r in warned]) == []


def test_qts_verbose_output_carries_no_fragment(tmp_path: Path) -> None:
    """``qts -v quote`` in a child process: tokenP answered, the call echoes pieces everywhere."""
    issued = json.dumps(token_reply(APP_KEY, datetime.now(UTC), value=TOKEN.value)).encode()
    token_answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(issued)).encode()
        + b"\r\n\r\n"
        + issued
    )

    for name in ("msg1 cut of the secret", "broken header line", "chunk-size line", "msg1 token fragment"):
        answer = ECHOES[name]

        class Gateway(DripServer):
            def script_for(self, head: bytes, answer: bytes = answer) -> Script:
                return _raw(token_answer) if b"tokenP" in head else _raw(answer)

        server = Gateway(_raw(b""), pause_s=0)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT / "src"),
            "KIS_MODE": "VTS",
            "KIS_VTS_APP_KEY": APP_KEY,
            "KIS_VTS_APP_SECRET": APP_SECRET,
            "KIS_VTS_BASE_URL": server.url,
            "QTS_TOKEN_STORE": "memory",
            "QTS_CALL_DEADLINE_S": "3",
            "QTS_WAIT_ON_RATE_LIMIT": "false",
        }
        try:
            done = subprocess.run(
                [sys.executable, "-m", "runtime.cli", "-v", "quote", "005930"],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=60,
                check=False,
            )
        finally:
            server.close()
        assert done.returncode != 0, done.stdout
        assert _leaks([done.stdout, done.stderr]) == [], f"{name}:\n{done.stderr}"


def test_a_token_seen_by_the_adapter_is_scrubbed_from_our_own_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token: AccessToken = TOKEN
    scrub.register(token.value)
    logging.getLogger("runtime.anything").warning("echo %s and %s", token.value[10:60], quote(token.value))
    assert _leaks([r.getMessage() for r in caplog.records]) == []
