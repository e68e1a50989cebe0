"""BrokerAuthPort contract, run against every broker: the KIS adapter over the emulator, and the fake.

This pins the Adapter <-> Runtime interface (Gate C item 4): whatever implements the port
issues scoped tokens without keeping them, injects them into calls, reports rejected tokens
with a typed error, refuses orders before the network and never mixes scopes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import attrs
import pytest
import urllib3

from contracts.support import FakeBroker
from kis_emulator import EmulatorConfig, KISEmulator, demo_account
from runtime.broker.base import AccessToken, AppCredentials, BrokerAuthPort, BrokerRequest, BrokerScope, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import ClockPort, FakeClock, SystemClock
from runtime.deadline import Deadline
from runtime.errors import OrderRefusedError, ScopeMismatchError, TokenRejectedError
from runtime.masking import fingerprint

PRICE = BrokerRequest(
    "GET",
    "/uapi/domestic-stock/v1/quotations/inquire-price",
    "FHKST01010100",
    params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
)
ORDER = BrokerRequest(
    "POST", "/uapi/domestic-stock/v1/trading/order-cash", "TTTC0012U", body={"PDNO": "005930"}
)


@dataclass
class BrokerCase:
    broker: BrokerAuthPort
    app_key: str
    clock: ClockPort
    advance_server: Callable[[float], object]
    orders_seen: Callable[[], int]

    def deadline(self) -> Deadline:
        """One call's deadline: every port method is handed one."""
        return Deadline.after(self.clock, 5.0)


def _kis_case() -> Generator[BrokerCase, None, None]:
    account = demo_account("VTS")
    # Unlimited calls per second: the contract is about tokens, not pacing.
    with KISEmulator("VTS", config=EmulatorConfig(max_rps=None)) as emulator:
        http = urllib3.PoolManager()
        adapter = KISBrokerAdapter(
            Mode.VTS,
            AppCredentials(account.app_key, account.app_secret),
            http,
            base_url=emulator.base_url,
            clock=SystemClock(),
        )
        yield BrokerCase(
            adapter,
            account.app_key,
            SystemClock(),
            emulator.advance,
            lambda: emulator.counters()["orders_attempted"],
        )
        http.clear()


def _fake_case() -> Iterator[BrokerCase]:
    clock = FakeClock()
    fake = FakeBroker(clock)
    yield BrokerCase(fake, "PSfake00000000000000000000000000001", clock, clock.advance, lambda: 0)


CASES = {"kis-adapter-over-emulator": _kis_case, "fake-broker": _fake_case}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[BrokerCase]:
    yield from CASES[request.param]()


def _reachable_values(obj: object, depth: int = 0, seen: set[int] | None = None) -> Iterator[object]:
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    yield obj
    children: list[object] = []
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    elif attrs.has(type(obj)):
        children = [getattr(obj, a.name) for a in attrs.fields(type(obj))]  # type: ignore[arg-type]
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        children = list(vars(obj).values())
    for child in children:
        yield from _reachable_values(child, depth + 1, seen)


def test_scope_names_the_mode_and_a_fingerprint_never_the_key(case: BrokerCase) -> None:
    scope = case.broker.scope
    assert scope == BrokerScope(Mode.VTS, fingerprint(case.app_key))
    assert case.app_key not in str(scope)
    assert case.app_key not in repr(scope)
    assert case.app_key not in repr(case.broker)


def test_issue_token_returns_a_valid_token_of_the_brokers_scope(case: BrokerCase) -> None:
    token = case.broker.issue_token(deadline=case.deadline())
    now = case.clock.now()
    assert token.scope == case.broker.scope
    assert token.token_type == "Bearer"
    assert token.expires_at > now
    assert token.expires_at - now <= timedelta(days=2)
    assert token.issued_at.tzinfo is not None


def test_the_kis_adapter_keeps_no_token_after_issuing_one() -> None:
    # Only the real adapter: the fake plays the server too, so it must remember tokens.
    cases = _kis_case()
    case = next(cases)
    token = case.broker.issue_token(deadline=case.deadline())
    for value in _reachable_values(case.broker):
        assert value is not token
        assert not (isinstance(value, str) and token.value in value)
    cases.close()


def test_send_injects_the_token_and_returns_the_answer(case: BrokerCase) -> None:
    token = case.broker.issue_token(deadline=case.deadline())
    answer = case.broker.send(PRICE, token, deadline=case.deadline())
    assert answer.status == 200
    assert answer.body["rt_cd"] == "0"


def test_an_unknown_token_is_rejected_with_a_typed_error(case: BrokerCase) -> None:
    issued = case.broker.issue_token(deadline=case.deadline())
    forged = attrs.evolve(issued, value=issued.value[:-6] + "forged")
    with pytest.raises(TokenRejectedError) as info:
        case.broker.send(PRICE, forged, deadline=case.deadline())
    assert info.value.code in ("EGW00121", "EGW00122")
    assert not info.value.expired


def test_a_token_expired_on_the_server_is_rejected_as_expired(case: BrokerCase) -> None:
    token = case.broker.issue_token(deadline=case.deadline())
    case.advance_server(24 * 3600 + 1)
    with pytest.raises(TokenRejectedError) as info:
        case.broker.send(PRICE, token, deadline=case.deadline())
    assert info.value.expired


def test_a_revoked_token_is_rejected_and_revoking_twice_is_harmless(case: BrokerCase) -> None:
    token = case.broker.issue_token(deadline=case.deadline())
    case.broker.revoke_token(token, deadline=case.deadline())
    case.broker.revoke_token(token, deadline=case.deadline())
    with pytest.raises(TokenRejectedError):
        case.broker.send(PRICE, token, deadline=case.deadline())


def test_a_token_of_another_scope_is_refused_before_the_network(case: BrokerCase) -> None:
    token = case.broker.issue_token(deadline=case.deadline())
    other = attrs.evolve(token, scope=BrokerScope(Mode.REAL, token.scope.key_fingerprint))
    with pytest.raises(ScopeMismatchError):
        case.broker.send(PRICE, other, deadline=case.deadline())
    with pytest.raises(ScopeMismatchError):
        case.broker.revoke_token(other, deadline=case.deadline())


def test_orders_are_refused_before_the_network(case: BrokerCase) -> None:
    token: AccessToken = case.broker.issue_token(deadline=case.deadline())
    with pytest.raises(OrderRefusedError):
        case.broker.send(ORDER, token, deadline=case.deadline())
    assert case.orders_seen() == 0
