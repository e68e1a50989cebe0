"""Secrets audit: no app secret, no app key and no full token anywhere they could be read.

Representative flows run with DEBUG logging on, through ``build_runtime`` (in-process) and
through ``qts -v`` (child processes): issue -> call -> reissue -> reject and retry -> revoke,
and the error paths (wrong secret, EGW00121, an HTML 502, a malformed answer). Everything a
person or a log shipper could see is collected: formatted log records, ``repr``/``str`` of
every value object, adapter, runtime, cache and store reached, every exception with its
cause/context chain and attributes, and the commands' stdout and stderr.

Allowed exceptions, and only these: the store's own token field (the file store's file) and
``qts token --reveal``'s stdout.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest
import urllib3

from kis_emulator import KISEmulator
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.bootstrap import build_http, build_runtime
from runtime.broker.base import AccessToken, AppCredentials, BrokerRequest, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import OffsetClock
from runtime.errors import QTSError
from runtime.settings import Settings, StoreKind, TokenStoreSpec
from tests.support.emulator import running_emulator
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, TOKEN_PATH
from tests.support.scripted_kis import APP_KEY, APP_SECRET, exception_chain

#: A whole KIS access token (three base64url segments); a masked token has "…" and never matches.
FULL_TOKEN = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
WRONG_SECRET = "W" * 179 + "x"
DAY_AND_A_MINUTE = 24 * 3600 + 60
SOURCE = Path(__file__).resolve().parents[2] / "src" / "runtime"


@attrs.define
class Evidence:
    """Every text gathered from one flow, labelled by where it came from."""

    texts: list[tuple[str, str]] = attrs.field(factory=list)
    tokens: set[str] = attrs.field(factory=set)

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def show(self, where: str, *objects: object) -> None:
        """Record ``str`` and ``repr`` of each object (and remember tokens met on the way)."""
        for item in objects:
            if isinstance(item, AccessToken):
                self.tokens.add(item.value)
            self.add(f"{where}: str({type(item).__name__})", str(item))
            self.add(f"{where}: repr({type(item).__name__})", repr(item))

    def error(self, where: str, exc: BaseException) -> None:
        """The exception, its attributes and its whole cause/context chain."""
        for link in exception_chain(exc):
            self.show(f"{where} {type(link).__name__}", link)
            self.add(f"{where} {type(link).__name__}.args", repr(link.args))
            for name, value in vars(link).items():
                self.add(f"{where} {type(link).__name__}.{name}", repr(value))

    def logs(self, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        for record in records:
            self.add(f"log {record.name}", formatter.format(record))

    def assert_clean(self, *secrets: str) -> None:
        tokens = {t for t in self.tokens if t}
        assert tokens, "the flow should have met at least one token"
        for where, text in self.texts:
            for secret in (*secrets, *tokens):
                assert secret not in text, f"a secret ({len(secret)} chars) leaked into {where}: {text[:300]}"
            assert not FULL_TOKEN.search(text), f"a full token leaked into {where}: {text[:300]}"


def _quote(runtime: object) -> object:
    from runtime.auth.session import KISRuntime

    assert isinstance(runtime, KISRuntime)
    return runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)


@pytest.fixture
def emulator() -> Iterator[KISEmulator]:
    with running_emulator("VTS", max_rps=None) as emu:
        yield emu


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    pool = build_http(None)
    yield pool
    pool.clear()


def test_in_process_flows_show_no_secret_or_token_anywhere(
    emulator: KISEmulator, http: urllib3.PoolManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = Evidence()
    clock = OffsetClock()
    settings = Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, APP_SECRET),
        base_url=emulator.base_url,
        token_store=TokenStoreSpec(StoreKind.MEMORY),
        call_deadline_s=2.0,
        wait_on_rate_limit=False,
    )
    store = InMemoryTokenStore()
    adapter = KISBrokerAdapter(Mode.VTS, settings.credentials, http, base_url=emulator.base_url, clock=clock)
    request = BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS)
    seen.show("values", settings, settings.credentials, settings.scope, settings.token_store, request)

    def advance(seconds: float) -> None:
        emulator.advance(seconds)
        clock.advance(seconds)

    with build_runtime(settings, clock=clock, store=store, broker=adapter) as runtime:
        issued = runtime.access_token()  # issue
        answer = _quote(runtime)  # call
        advance(DAY_AND_A_MINUTE)
        reissued_answer = _quote(runtime)  # reissue after expiry
        reissued = runtime.cache.peek()
        advance(61)
        emulator.void_tokens()
        retried_answer = _quote(runtime)  # EGW00121 -> invalidate, reissue, retry once
        third = runtime.cache.peek()
        seen.show("flow", issued, answer, reissued, reissued_answer, third, retried_answer)
        seen.show("objects", adapter, runtime, runtime.cache, store, *store.tokens())
        revoked = runtime.revoke()  # revoke
        seen.show("revoke", revoked, runtime.cache.peek())

        # Errors: EGW00121 that a reissue cannot cure, an HTML 502, a malformed answer.
        advance(61)
        runtime.access_token()
        seen.tokens.update(t.value for t in (runtime.cache.peek(),) if t is not None)
        failures: list[tuple[str, str]] = [
            ("error_code", PRICE_PATH),
            ("html_502", PRICE_PATH),
            ("malformed_json", PRICE_PATH),
        ]
        for kind, path in failures:
            params = {"msg_cd": "EGW00121", "msg1": "유효하지 않은 token 입니다.", "status": 500}
            emulator.inject_fault(kind, count=5, path=path, **(params if kind == "error_code" else {}))
            advance(61)
            with pytest.raises(QTSError) as caught:
                _quote(runtime)
            seen.error(f"{kind} on the call", caught.value)
            emulator.reset()
            advance(61)
            held = runtime.cache.peek()
            if held is not None:
                seen.tokens.add(held.value)
        emulator.inject_fault("malformed_json", count=1, path=TOKEN_PATH)
        runtime.cache.forget()
        with pytest.raises(QTSError) as caught:
            runtime.access_token()
        seen.error("malformed tokenP", caught.value)
        seen.show("objects after errors", adapter, runtime, runtime.cache, store)

    wrong = attrs.evolve(settings, credentials=AppCredentials(APP_KEY, WRONG_SECRET))
    with build_runtime(wrong, clock=clock, store=InMemoryTokenStore()) as rejected:
        with pytest.raises(QTSError) as caught:
            rejected.access_token()
        seen.error("wrong secret", caught.value)
        seen.show("wrong-secret objects", wrong, wrong.credentials, rejected, rejected.cache)

    seen.logs(caplog.records)
    assert any(r.levelno == logging.DEBUG and r.name.startswith("runtime") for r in caplog.records)
    assert any(r.name.startswith("urllib3") for r in caplog.records), "urllib3's debug log was captured too"
    seen.assert_clean(APP_SECRET, APP_KEY, WRONG_SECRET)


def test_the_audit_would_catch_a_leak() -> None:
    """The checks above are not vacuous: a planted secret or token is found."""
    for planted in (APP_SECRET, "token is eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0b2tlbiJ9.c2lnbmF0dXJlc2ln"):
        seen = Evidence(tokens={"some-token-value-0123456789"})
        seen.add("planted", f"text around {planted} here")
        with pytest.raises(AssertionError):
            seen.assert_clean(APP_SECRET)


# --- qts in child processes -------------------------------------------------------------------


@attrs.frozen
class Run:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


def _env(emulator: KISEmulator, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "KIS_MODE": "VTS",
        "KIS_VTS_BASE_URL": emulator.base_url,
        "KIS_VTS_APP_KEY": APP_KEY,
        "KIS_VTS_APP_SECRET": APP_SECRET,
        "QTS_TOKEN_STORE": f"file:{tmp_path / 'tokens'}",
        "QTS_CALL_DEADLINE_S": "2",
        "QTS_WAIT_ON_RATE_LIMIT": "false",
    }
    env.update(extra)
    return env


def _qts(tmp_path: Path, env: Mapping[str, str], *args: str) -> Run:
    done = subprocess.run(  # noqa: S603 - this interpreter and the test's own arguments
        [sys.executable, "-m", "runtime.cli", *args],
        env=dict(env),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
        check=False,
    )
    return Run(tuple(args), done.returncode, done.stdout, done.stderr)


def test_qts_with_debug_logs_shows_no_secret_or_token_except_reveal(
    emulator: KISEmulator, tmp_path: Path
) -> None:
    emulator.set_config(token_request_interval=0)
    env = _env(emulator, tmp_path)
    runs: list[Run] = []

    def qts(*args: str, environment: Mapping[str, str] = env) -> Run:
        run = _qts(tmp_path, environment, "-v", *args)
        runs.append(run)
        return run

    first = qts("token")
    assert first.code == 0
    assert "DEBUG runtime." in first.stderr, "-v turns the debug log on"
    assert qts("token", "--json").code == 0
    revealed = qts("token", "--reveal")
    assert revealed.code == 0
    token = revealed.stdout.strip()
    assert FULL_TOKEN.fullmatch(token), "--reveal prints the raw token"
    assert qts("status").code == 0
    assert qts("quote", "005930").code == 0
    assert qts("revoke").code == 0
    assert qts("demo").code == 0

    # Error paths, each with -v (debug logs and a traceback on stderr). A memory store: the file
    # store's one-tokenP-a-minute budget would (rightly) answer exit 5 before KIS is asked.
    errors = {**env, "QTS_TOKEN_STORE": "memory"}
    assert qts("token", environment={**errors, "KIS_VTS_APP_SECRET": WRONG_SECRET}).code == 3
    emulator.inject_fault("html_502", count=1, path=TOKEN_PATH)
    assert qts("token", environment=errors).code == 4
    after_502 = qts("token", "--reveal", environment=errors)
    emulator.reset()
    emulator.inject_fault("malformed_json", count=5, path=PRICE_PATH)
    assert qts("quote", "005930", environment=errors).code == 4
    emulator.reset()
    emulator.inject_fault(
        "error_code",
        count=5,
        path=PRICE_PATH,
        msg_cd="EGW00121",
        msg1="유효하지 않은 token 입니다.",
        status=500,
    )
    assert qts("quote", "005930", environment=errors).code == 3

    tokens = {token, after_502.stdout.strip()}
    secrets = (APP_SECRET, APP_KEY, WRONG_SECRET, *tokens)
    for run in runs:
        shown = f"qts {' '.join(run.argv)} (exit {run.code})"
        assert "Traceback" not in run.stderr or run.code != 0, f"a traceback on success: {shown}"
        for secret in secrets:
            assert secret not in run.stderr, f"a secret ({len(secret)} chars) on stderr of {shown}"
        assert not FULL_TOKEN.search(run.stderr), f"a full token on stderr of {shown}"
        if run.argv[-1] != "--reveal":
            for secret in secrets:
                assert secret not in run.stdout, f"a secret ({len(secret)} chars) on stdout of {shown}"
            assert not FULL_TOKEN.search(run.stdout), f"a full token on stdout of {shown}"
        else:
            for secret in (APP_SECRET, APP_KEY, WRONG_SECRET):
                assert secret not in run.stdout, f"a credential on stdout of {shown}"

    # The store's own file may hold the token, but never a credential.
    for path in (tmp_path / "tokens").glob("*"):
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in (APP_SECRET, APP_KEY, WRONG_SECRET):
            assert secret not in text, f"a credential in the store file {path.name}"


def test_only_the_masking_module_cuts_tokens_and_keys_for_display() -> None:
    """No module slices a token, key or secret itself (``value[:4]``, ``key[-4:]``): one helper masks.

    The emulator package is left out on purpose: it plays KIS, the side that owns the keys.
    """
    pattern = re.compile(r"(value|token|key|secret)\w*\s*\[\s*-?[\w ]*:\s*-?[\w ]*\]", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}: {line.strip()}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path.name != "masking.py" and "emulator" not in path.relative_to(SOURCE).parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "\n".join(offenders)


# --- the WebSocket approval key ------------------------------------------------------------------

#: A whole approval key as KIS (and the emulator) issue them; a masked key has "…" and never matches.
FULL_APPROVAL_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_stream_flows_show_no_approval_key_anywhere(
    emulator: KISEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue, stream, drop, void and reissue, a bad frame, a refused second session, a key KIS
    never accepts: with DEBUG logs on (websockets' included), no approval key is ever shown."""
    from runtime.auth.stores.file import FileTokenStore
    from runtime.bootstrap import build_stream
    from runtime.broker.realtime import registrations_for
    from runtime.clock import SystemClock
    from tests.support.fakes import FakeBroker
    from tests.support.streams import take

    caplog.set_level(logging.DEBUG)
    emulator.set_config(ws_tick_interval=0.01, ws_ping_interval=0.1)
    seen = Evidence()
    settings = Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, APP_SECRET),
        base_url=emulator.base_url,
        ws_url=emulator.ws_url,
        call_deadline_s=5.0,
    )
    keys: set[str] = set()
    store = FileTokenStore(tmp_path / "tokens")
    session = build_stream(settings, store=store)
    subscription = session.subscribe(registrations_for(["005930"], depth=True))
    seen.show("stream", *take(subscription, 10))
    keys.add(session.approvals.get().value)
    emulator.inject_stream_fault("bad_frame")
    emulator.void_approval_keys()
    emulator.drop_streams()
    take(subscription, 20)
    held = session.approvals.peek()
    assert held is not None
    keys.add(held.value)
    assert len(keys) == 2, "the voided key was reissued"
    with pytest.raises(QTSError) as refused:
        build_stream(settings, store=FileTokenStore(tmp_path / "tokens")).subscribe(
            registrations_for(["005930"])
        )
    seen.error("second session", refused.value)
    seen.show("objects", session, session.approvals, held, store, subscription, session.stats.as_dict())
    session.close()

    foreign = FakeBroker(SystemClock(), app_key=APP_KEY)
    doomed = build_stream(settings, store=InMemoryTokenStore(), broker=foreign)
    with pytest.raises(QTSError) as rejected:
        take(doomed.subscribe(registrations_for(["005930"])), 1)
    keys.update(k.value for k in foreign.approvals)
    seen.error("rejected key", rejected.value)
    doomed.close()

    seen.logs(caplog.records)
    assert any(r.name.startswith("runtime.auth.stream") for r in caplog.records)
    for where, text in seen.texts:
        for key in keys:
            assert key not in text, f"an approval key leaked into {where}: {text[:300]}"
        assert not FULL_APPROVAL_KEY.search(text), f"an approval key leaked into {where}: {text[:300]}"
        for secret in (APP_SECRET, APP_KEY):
            assert secret not in text, f"a credential leaked into {where}"


def test_qts_approval_and_stream_with_debug_logs_show_no_approval_key(
    emulator: KISEmulator, tmp_path: Path
) -> None:
    emulator.set_config(ws_tick_interval=0.01)
    env = _env(emulator, tmp_path, KIS_VTS_WS_URL=emulator.ws_url)
    runs = [
        _qts(tmp_path, env, "-v", "approval"),
        _qts(tmp_path, env, "-v", "approval", "--json"),
        _qts(tmp_path, env, "-v", "stream", "005930", "--count", "5"),
        _qts(tmp_path, env, "-v", "stream", "005930", "--depth", "--count", "5", "--json"),
    ]
    assert [run.code for run in runs] == [0, 0, 0, 0], runs
    stored = list((tmp_path / "tokens").glob("*.approval.json"))
    assert len(stored) == 1, "the store keeps the key (the one allowed place)"
    key = json.loads(stored[0].read_text(encoding="utf-8"))["approval"]["value"]
    for run in runs:
        for text in (run.stdout, run.stderr):
            assert key not in text, f"the approval key in the output of qts {' '.join(run.argv)}"
            assert not FULL_APPROVAL_KEY.search(text)
            assert APP_SECRET not in text
