"""The fault matrix: every hostile answer x tokenP / revokeP / a call, over real loopback sockets.

One table drives the real composition root (``build_runtime``) and then the real ``qts``
command (in-process) against the same fault. For every row:

- the typed error class (and nothing that is not a QTSError);
- the wall time stays within the call deadline (2 s) + 0.5 s, retries and pauses included;
- no token is cached by the failure and the store is unchanged: call and revokeP rows start
  with a good token in memory and in the store, which must survive; tokenP rows start with an
  expired token in the store, which must be neither replaced nor deleted;
- ``qts`` exits with that error's ``exit_code``, in at most two stderr lines, no traceback,
  within its deadline (QTS_CALL_DEADLINE_S=1 to keep the suite short), and leaves its file
  store's token entry as it found it.

Peers: the KIS emulator's fault injection where it has the fault, a scripted KIS for bodies
the emulator cannot produce, and raw sockets for refused / connect timeout / silent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import pytest

from kis_emulator import KISEmulator
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.errors import (
    BrokerUnavailableError,
    CallRateLimitedError,
    CredentialsRejectedError,
    MalformedResponseError,
    QTSError,
    WrongModeError,
)
from runtime.settings import Settings
from tests.support.emulator import running_emulator
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, REVOKE_PATH, TOKEN_PATH, jwt
from tests.support.scripted_kis import (
    APP_KEY,
    APP_SECRET,
    BacklogFullServer,
    Canned,
    ScriptedKIS,
    SilentServer,
    cli_env,
    closed_url,
    fresh_token,
    run_cli,
)

DEADLINE_S = 2.0
#: ``qts`` gets QTS_CALL_DEADLINE_S=1: the same rule, half the wall time for the stalling rows.
CLI_DEADLINE_S = 1.0
SLACK_S = 0.5
ENDPOINTS = ("tokenP", "revokeP", "call")
PATHS = {"tokenP": TOKEN_PATH, "revokeP": REVOKE_PATH, "call": PRICE_PATH}
CLI_ARGV = {"tokenP": ("token",), "revokeP": ("revoke",), "call": ("quote", "005930")}

SETTINGS = Settings(
    mode=Mode.VTS,
    credentials=AppCredentials(APP_KEY, APP_SECRET),
    base_url="http://127.0.0.1:9",  # replaced per row
    call_deadline_s=DEADLINE_S,
    wait_on_rate_limit=False,
)


# --- peers ----------------------------------------------------------------------------------


class Peer(Protocol):
    @property
    def url(self) -> str: ...

    def arm(self, endpoint: str) -> None:
        """Make the endpoint misbehave (again) from now on."""
        ...

    def unblock(self) -> None:
        """Release anything a client may be stuck on (end of row)."""
        ...


@attrs.define
class EmulatorFault:
    """A fault the KIS emulator injects itself (``inject_fault``)."""

    kind: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    emulator: KISEmulator | None = None

    @property
    def url(self) -> str:
        assert self.emulator is not None
        return self.emulator.base_url

    def arm(self, endpoint: str) -> None:
        assert self.emulator is not None
        self.emulator.reset()
        # Enough uses for every retry the runtime may make (GET: 3 attempts, EGW00201: 2 tries).
        self.emulator.inject_fault(self.kind, count=10, path=PATHS[endpoint], **self.params)

    def unblock(self) -> None:
        pass


@attrs.define
class ScriptedFault:
    """A body the emulator cannot produce, served by a scripted KIS (per endpoint)."""

    answers: Mapping[str, Canned]
    server: ScriptedKIS | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def arm(self, endpoint: str) -> None:
        assert self.server is not None
        self.server.disarm()
        self.server.arm(PATHS[endpoint], self.answers[endpoint])

    def unblock(self) -> None:
        pass


class _Closable(Protocol):
    @property
    def url(self) -> str: ...

    def close(self) -> None: ...


@attrs.define
class RawFault:
    """A socket-level misbehaviour: the whole host misbehaves, whatever the path."""

    make: Callable[[], _Closable] | None
    server: _Closable | None = None
    refused_url: str | None = None

    @property
    def url(self) -> str:
        if self.server is not None:
            return self.server.url
        assert self.refused_url is not None
        return self.refused_url

    def arm(self, endpoint: str) -> None:
        pass

    def unblock(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.refused_url = closed_url()


FaultPeer = EmulatorFault | ScriptedFault | RawFault


# --- the table --------------------------------------------------------------------------------


def _every(body: object, status: int = 200) -> dict[str, Canned]:
    canned = Canned.json(status, body)
    return dict.fromkeys(ENDPOINTS, canned)


def _token_body(**fields: object) -> dict[str, Canned]:
    from datetime import UTC, datetime

    base: dict[str, object] = {
        "access_token": jwt(APP_KEY, datetime.now(UTC)),
        "token_type": "Bearer",
        "expires_in": 86400,
    }
    base.update(fields)
    return {"tokenP": Canned.json(200, {k: v for k, v in base.items() if v is not None})}


def _kst_in(hours: float) -> str:
    from datetime import UTC, datetime, timedelta

    from runtime.broker.kis.auth import format_kst

    return format_kst(datetime.now(UTC) + timedelta(hours=hours))


@attrs.frozen
class Row:
    fault: str
    make_peer: Callable[[], FaultPeer]
    expected: type[QTSError]
    endpoints: tuple[str, ...] = ENDPOINTS


_MISTYPED = {
    "tokenP": Canned.json(
        200,
        {"access_token": 12345, "token_type": "Bearer", "access_token_token_expired": 20260101},
    ),
    "revokeP": Canned.json(200, {"code": [200], "message": 7}),
    # rt_cd is a string in every KIS answer (KIS_API.md §5); an integer is a mistyped field.
    "call": Canned.json(
        200, {"rt_cd": 0, "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다!", "output": {}}
    ),
}

ROWS = (
    Row("connection_refused", lambda: RawFault(None, refused_url=closed_url()), BrokerUnavailableError),
    Row("connect_timeout", lambda: RawFault(BacklogFullServer), BrokerUnavailableError),
    Row("accepts_then_stalls", lambda: RawFault(SilentServer), BrokerUnavailableError),
    Row("reset_mid_body", lambda: EmulatorFault("reset"), BrokerUnavailableError),
    Row("html_502", lambda: EmulatorFault("html_502"), BrokerUnavailableError),
    Row("empty_body", lambda: EmulatorFault("empty_body"), MalformedResponseError),
    Row("non_json", lambda: EmulatorFault("malformed_json"), MalformedResponseError),
    Row("json_wrong_shape", lambda: ScriptedFault(_every(["not", "an", "object"])), MalformedResponseError),
    Row("missing_fields", lambda: EmulatorFault("missing_fields"), MalformedResponseError),
    Row("mistyped_fields", lambda: ScriptedFault(_MISTYPED), MalformedResponseError),
    Row(
        "expiry_in_the_past",
        lambda: ScriptedFault(_token_body(access_token_token_expired=_kst_in(-1))),
        MalformedResponseError,
        ("tokenP",),
    ),
    Row(
        "expiry_unparsable",
        lambda: ScriptedFault(_token_body(access_token_token_expired="tomorrow, probably")),
        MalformedResponseError,
        ("tokenP",),
    ),
    Row(
        "expiry_over_two_days_ahead",
        lambda: ScriptedFault(_token_body(access_token_token_expired=_kst_in(49))),
        MalformedResponseError,
        ("tokenP",),
    ),
    Row(
        "wrong_token_type",
        lambda: ScriptedFault(_token_body(access_token_token_expired=_kst_in(24), token_type="MAC")),
        MalformedResponseError,
        ("tokenP",),
    ),
    Row("body_over_1mib", lambda: EmulatorFault("huge_body"), MalformedResponseError),
    Row("non_utf8", lambda: EmulatorFault("non_utf8"), MalformedResponseError),
    Row(
        "http200_with_error_code",
        lambda: EmulatorFault("error_code", {"msg_cd": "EGW00105", "status": 200}),
        CredentialsRejectedError,
    ),
    Row(
        "egw00201_burst",
        lambda: EmulatorFault(
            "error_code", {"msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다.", "status": 500}
        ),
        CallRateLimitedError,
    ),
    Row(
        "egw02004",
        lambda: EmulatorFault(
            "error_code",
            {
                "msg_cd": "EGW02004",
                "msg1": "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다.",
                "status": 500,
            },
        ),
        WrongModeError,
    ),
)

CASES = [
    pytest.param(row, endpoint, id=f"{row.fault}-{endpoint}") for row in ROWS for endpoint in row.endpoints
]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[KISEmulator]:
    """One emulator for the module (stopping one costs up to half a second); reset per row."""
    with running_emulator("VTS", max_rps=None, token_request_interval=0) as emu:
        yield emu


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedKIS]:
    server = ScriptedKIS()
    yield server
    server.close()


# --- the test ---------------------------------------------------------------------------------


def _act(runtime: Any, endpoint: str) -> object:
    if endpoint == "tokenP":
        return runtime.access_token()
    if endpoint == "revokeP":
        return runtime.revoke()
    return runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)


@pytest.mark.parametrize(("row", "endpoint"), CASES)
def test_fault_ends_in_its_typed_error_in_time_with_the_cache_untouched(
    row: Row,
    endpoint: str,
    request: pytest.FixtureRequest,
    emulator: KISEmulator,
    scripted: ScriptedKIS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Typed error, deadline + 0.5 s, no token cached, store unchanged, matching ``qts`` exit code."""
    made = row.make_peer()
    if isinstance(made, EmulatorFault):
        made.emulator = emulator
    elif isinstance(made, ScriptedFault):
        made.server = scripted
    elif made.make is not None:
        made.server = made.make()
    request.addfinalizer(made.unblock)
    request.addfinalizer(scripted.disarm)

    # --- through build_runtime --------------------------------------------------------------
    settings = attrs.evolve(SETTINGS, base_url=made.url)
    store = InMemoryTokenStore()
    if endpoint == "tokenP":
        store.save(settings.scope, fresh_token(settings.scope, expired=True))
    else:
        store.save(settings.scope, fresh_token(settings.scope))
    with build_runtime(settings, store=store) as runtime:
        if endpoint != "tokenP":
            runtime.access_token()  # the good token: from the store into memory, no network
        cached_before, stored_before = runtime.cache.peek(), store.tokens()
        made.arm(endpoint)

        started = time.monotonic()
        with pytest.raises(QTSError) as caught:
            _act(runtime, endpoint)
        elapsed = time.monotonic() - started

        assert type(caught.value) is row.expected, f"{type(caught.value).__name__}: {caught.value}"
        assert elapsed <= DEADLINE_S + SLACK_S, f"took {elapsed:.2f} s"
        assert runtime.cache.peek() == cached_before, "the failure changed the cached token"
        assert store.tokens() == stored_before, "the failure changed the store"

    # --- through qts --------------------------------------------------------------------------
    folder = cli_env(monkeypatch, tmp_path, made.url, deadline_s=CLI_DEADLINE_S)
    file_store = FileTokenStore(folder)
    if endpoint != "tokenP":
        file_store.save(settings.scope, fresh_token(settings.scope))
    stored_file_before = file_store.load(settings.scope)
    made.arm(endpoint)

    run = run_cli(CLI_ARGV[endpoint], capsys, limit_s=CLI_DEADLINE_S + SLACK_S, unblock=made.unblock)

    assert run.raised is None, f"qts raised {run.raised!r}\n{run}"
    assert run.exit_code is not None, f"qts overran its {CLI_DEADLINE_S:g} s deadline + {SLACK_S} s\n{run}"
    assert run.exit_code == caught.value.exit_code, str(run)
    assert "Traceback" not in run.stderr + run.stdout, str(run)
    # Besides the note that the host is not KIS's official one: the error in at most two lines.
    errors = [line for line in run.stderr.splitlines() if not line.startswith("qts: note: ")]
    assert 1 <= len(errors) <= 2, str(run)
    assert file_store.load(settings.scope) == stored_file_before, "qts changed the stored token"
    _assert_file_has_no_secret(file_store.path_for(settings.scope))


def _assert_file_has_no_secret(path: Path) -> None:
    if path.exists():
        text = path.read_text(encoding="utf-8")
        assert APP_SECRET not in text
        json.loads(text)
