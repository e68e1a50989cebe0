"""Gate C item 4: the Adapter <-> Runtime interface is frozen.

``contracts/interface_snapshot.json`` is derived from the code by ``contracts/freeze.py``. The code
may grow (a new port, method, optional parameter, defaulted field, enum member or error: an
addition, reported as a skip with a note) but nothing recorded may change or disappear (a break:
the test fails and says how a deliberate change is recorded). A port may not even grow: a new
method or a new optional parameter on a port is a break, since every implementation must follow.
"""

from __future__ import annotations

import enum
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs
import pytest

from contracts import freeze


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    if not freeze.SNAPSHOT_PATH.exists():
        pytest.fail(f"{freeze.SNAPSHOT_PATH.name} is missing: run `python contracts/freeze.py` to create it")
    return freeze.load(freeze.SNAPSHOT_PATH)


@pytest.fixture(scope="module")
def current() -> dict[str, Any]:
    return freeze.build_snapshot()


def failure_message(breaks: list[str]) -> str:
    lines = "\n".join(f"  - {item}" for item in breaks)
    return f"the frozen Phase 2 interface changed:\n{lines}\n{freeze.ACCEPT_HINT}"


def test_no_frozen_item_changed_or_was_removed(recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Every port method, value field, error and public name recorded is still there, unchanged."""
    diff = freeze.compare(recorded, current)
    if diff.breaks:
        pytest.fail(failure_message(diff.breaks), pytrace=False)


def test_additions_are_recorded(recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Additions are allowed; until they are recorded this is skipped with a note naming them."""
    diff = freeze.compare(recorded, current)
    if diff.additions:
        pytest.skip(
            f"the interface grew by {len(diff.additions)} item(s) not yet frozen "
            f"({'; '.join(diff.additions[:5])}{' …' if len(diff.additions) > 5 else ''}): "
            "run `python contracts/freeze.py --accept-additions` to record them"
        )


def test_snapshot_covers_the_ports_values_errors_and_runtime(current: dict[str, Any]) -> None:
    """The derivation sees what Gate C names: ports, values, every error, KISRuntime, build_runtime."""
    from runtime import errors

    kinds = {name: entry["kind"] for name, entry in current["classes"].items()}
    for port in (
        "runtime.broker.base:BrokerAuthPort",
        "runtime.auth.ports:TokenStorePort",
        "runtime.clock:ClockPort",
    ):
        assert kinds.get(port) == "port", port
    for value in (
        "runtime.broker.base:AccessToken",
        "runtime.broker.base:BrokerScope",
        "runtime.broker.base:BrokerRequest",
        "runtime.broker.base:BrokerResponse",
        "runtime.settings:Settings",
        "runtime.broker.base:AppCredentials",
        "runtime.settings:TokenStoreSpec",
    ):
        assert kinds.get(value) == "value", value
    assert kinds.get("runtime.broker.base:Mode") == "enum"
    assert kinds.get("runtime.settings:StoreKind") == "enum"
    for name in errors.__all__:
        assert kinds.get(f"runtime.errors:{name}") == "error", name
    assert kinds.get("runtime.auth.session:KISRuntime") == "class"
    assert {"call", "access_token", "revoke", "close", "scope"} <= set(
        current["classes"]["runtime.auth.session:KISRuntime"]["methods"]
    )
    assert "settings" in {
        p["name"] for p in current["functions"]["runtime.bootstrap:build_runtime"]["params"]
    }


def test_every_protocol_in_the_port_modules_is_recorded(current: dict[str, Any]) -> None:
    """A new Protocol in a port module (say, a new optional port) is found without listing it by hand."""
    import importlib

    for module_name in freeze.INTERFACE_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and getattr(obj, "_is_protocol", False)
                and obj.__module__ == module_name
            ):
                if name.startswith("_") or obj is Protocol:
                    continue
                assert f"{module_name}:{name}" in current["classes"], (
                    f"{module_name}.{name} is not in __all__"
                )


def test_recorded_snapshot_is_what_freeze_writes(recorded: dict[str, Any]) -> None:
    """The file is the script's output, not hand-edited: re-serialising it gives the same bytes."""
    assert freeze.SNAPSHOT_PATH.read_text(encoding="utf-8") == freeze.dumps(recorded) + "\n"


# --------------------------------------------------------------------------- the comparison itself
# Synthetic ports and values, so the rules are proven without touching Phase 2 code.


class _PortV1(Protocol):
    def send(self, request: str, *, timeout_s: float | None = None) -> int: ...


class _PortRenamedParameter(Protocol):
    def send(self, req: str, *, timeout_s: float | None = None) -> int: ...


class _PortNewReturn(Protocol):
    def send(self, request: str, *, timeout_s: float | None = None) -> str: ...


class _PortNewOptional(Protocol):
    def send(self, request: str, *, timeout_s: float | None = None, idempotency_key: str = "") -> int: ...

    def cancel(self, order_id: str) -> None: ...


class _PortNewOptionalParameterOnly(Protocol):
    def send(self, request: str, *, timeout_s: float | None = None, idempotency_key: str = "") -> int: ...


class _PortNewMethodOnly(Protocol):
    def send(self, request: str, *, timeout_s: float | None = None) -> int: ...

    def cancel(self, order_id: str) -> None: ...


class _PortNewProperty(Protocol):
    def send(self, request: str, *, timeout_s: float | None = None) -> int: ...

    @property
    def region(self) -> str: ...


class _ClassV1:
    def __init__(self, status: int) -> None:
        self.status = status

    def send(self, request: str, *, timeout_s: float | None = None) -> int:
        return self.status


class _ClassNewOptional:
    def __init__(self, status: int, *, body: str | None = None) -> None:
        self.status = status
        self.body = body

    def send(self, request: str, *, timeout_s: float | None = None, retries: int = 0) -> int:
        return self.status

    def close(self) -> None:
        self.status = 0


class _PortNewRequired(Protocol):
    def send(self, request: str, token: str, *, timeout_s: float | None = None) -> int: ...


class _PortNoLongerKeywordOnly(Protocol):
    def send(self, request: str, timeout_s: float | None = None) -> int: ...


class _PortWithoutSend(Protocol):
    def lock(self) -> AbstractContextManager[None]: ...


@attrs.frozen
class _ValueV1:
    status: int
    body: str | None = None


@attrs.frozen
class _ValueNewField:
    status: int
    body: str | None = None
    tr_cont: str = ""


@attrs.frozen
class _ValueRequiredField:
    status: int
    body: str | None = None
    gt_uid: str = attrs.field(kw_only=True)


@attrs.frozen
class _ValueRetyped:
    status: str
    body: str | None = None


class _ModeV1(enum.Enum):
    VTS = "VTS"
    REAL = "REAL"


class _ModeGrown(enum.Enum):
    VTS = "VTS"
    REAL = "REAL"
    SIM = "SIM"


class _ModeShrunk(enum.Enum):
    VTS = "VTS"


class _ErrorV1(Exception):
    retryable = False
    exit_code = 3


class _ErrorNewExitCode(Exception):
    retryable = False
    exit_code = 4


class _ErrorRetryable(Exception):
    retryable = True
    exit_code = 3


def _diff(before: type, after: type) -> freeze.Difference:
    def snap(cls: type) -> dict[str, Any]:
        return {"classes": {"x:Thing": freeze.describe_class(cls)}}

    return freeze.compare(snap(before), snap(after))


@pytest.mark.parametrize(
    ("before", "after", "why"),
    [
        (_PortV1, _PortRenamedParameter, "a renamed parameter"),
        (_PortV1, _PortNewReturn, "a new return type"),
        (_PortV1, _PortNewRequired, "a new required parameter"),
        (_PortV1, _PortNoLongerKeywordOnly, "a keyword-only parameter made positional"),
        (_PortV1, _PortWithoutSend, "a removed method"),
        (_ValueV1, _ValueRetyped, "a field's type"),
        (_ValueNewField, _ValueV1, "a removed field"),
        (_ValueV1, _ValueRequiredField, "a new field without a default"),
        (_ModeV1, _ModeShrunk, "a removed enum member"),
        (_ErrorV1, _ErrorNewExitCode, "an error's exit code"),
        (_ErrorV1, _ErrorRetryable, "an error's retryable flag"),
        (_PortV1, _ValueV1, "a port turned into a value"),
        (_PortV1, _PortNewOptional, "a new optional keyword parameter and a new method on a port"),
    ],
)
def test_a_change_or_removal_is_a_break(before: type, after: type, why: str) -> None:
    assert _diff(before, after).breaks, why


@pytest.mark.parametrize(
    ("before", "after", "why"),
    [
        (_ValueV1, _ValueNewField, "a new trailing field with a default"),
        (_ClassV1, _ClassNewOptional, "a new optional constructor and method parameter, a new method"),
        (_ModeV1, _ModeGrown, "a new enum member"),
    ],
)
def test_an_addition_is_not_a_break(before: type, after: type, why: str) -> None:
    diff = _diff(before, after)
    assert diff.breaks == [], why
    assert diff.additions, why


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (_PortNewOptionalParameterOnly, "x:Thing.send: new optional parameter 'idempotency_key' on a port"),
        (_PortNewMethodOnly, "x:Thing.cancel: added to a port"),
        (_PortNewProperty, "x:Thing.region: added to a port"),
    ],
)
def test_any_change_to_a_port_is_a_break_even_an_optional_parameter(after: type, expected: str) -> None:
    """A Protocol is implemented, not only called: what a caller may ignore, an implementation may not."""
    diff = _diff(_PortV1, after)
    assert diff.additions == []
    assert [item for item in diff.breaks if item.startswith(expected)], diff.breaks
    assert all(freeze.PORT_RULE in item for item in diff.breaks)


def test_an_optional_parameter_on_a_value_constructor_or_a_function_is_an_addition() -> None:
    def before(request: str) -> int:
        return len(request)

    def after(request: str, *, retries: int = 0) -> int:
        return len(request) + retries

    constructor = _diff(_ClassV1, _ClassNewOptional)
    assert constructor.breaks == []
    assert "x:Thing(): new optional parameter 'body'" in constructor.additions
    function = freeze.compare(
        {"functions": {"m:f": freeze.describe_callable(before)}},
        {"functions": {"m:f": freeze.describe_callable(after)}},
    )
    assert function.breaks == []
    assert function.additions == ["m:f: new optional parameter 'retries'"]


def test_identical_is_neither(current: dict[str, Any]) -> None:
    assert freeze.compare(current, current) == freeze.Difference()


def test_new_and_removed_classes_and_functions() -> None:
    def f(x: int) -> int:
        return x

    one: dict[str, Any] = {"classes": {"m:A": freeze.describe_class(_PortV1)}, "functions": {}}
    two: dict[str, Any] = {
        "classes": {"m:A": freeze.describe_class(_PortV1), "m:B": freeze.describe_class(_ValueV1)},
        "functions": {"m:f": freeze.describe_callable(f)},
    }
    assert freeze.compare(one, two).breaks == []
    assert len(freeze.compare(one, two).additions) == 2
    assert sorted(freeze.compare(two, one).breaks) == ["m:B: removed", "m:f: removed"]


def test_a_removed_public_name_is_a_break() -> None:
    old = {"exports": {"runtime": ["KISRuntime", "build_runtime"]}}
    new = {"exports": {"runtime": ["KISRuntime", "build_runtime", "OrderPort"]}}
    assert freeze.compare(old, new).breaks == []
    assert freeze.compare(new, old).breaks == ["runtime.__all__: 'OrderPort' removed"]


def test_failure_message_says_how_a_deliberate_change_is_recorded() -> None:
    message = failure_message(["runtime.broker.base:BrokerAuthPort.send: parameter 'token' was removed"])
    assert "python contracts/freeze.py --accept-additions" in message
    assert "new phase's decision" in message
    assert "docs/gate-c.md" in message


def test_a_changed_port_signature_in_the_code_fails_the_comparison(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: change BrokerAuthPort.send's signature in memory, derive again, and see a break."""
    from runtime.broker import base

    def send(self: Any, request: Any, token: Any, *, deadline: Any, retries: int) -> Any: ...

    send.__annotations__ = {"request": "BrokerRequest", "token": "AccessToken", "deadline": "Deadline"}
    send.__annotations__ |= {"retries": "int", "return": "BrokerResponse"}
    monkeypatch.setattr(base.BrokerAuthPort, "send", send)
    breaks = freeze.compare(recorded, freeze.build_snapshot()).breaks
    expected = (
        "runtime.broker.base:BrokerAuthPort.send: new required parameter 'retries' breaks existing callers"
    )
    assert expected in breaks


def test_an_optional_parameter_added_to_the_real_broker_port_fails_the_comparison(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end, the case the old rule let through: BrokerAuthPort.issue_token grows an optional
    parameter; the fake broker and any Phase 3 adapter would no longer conform, so it is a break."""
    from runtime.broker import base

    def issue_token(self: Any, *, deadline: Any, force: bool = False) -> Any: ...

    issue_token.__annotations__ = {"deadline": "Deadline", "force": "bool", "return": "AccessToken"}
    monkeypatch.setattr(base.BrokerAuthPort, "issue_token", issue_token)
    diff = freeze.compare(recorded, freeze.build_snapshot())
    assert [
        item
        for item in diff.breaks
        if item.startswith(
            "runtime.broker.base:BrokerAuthPort.issue_token: new optional parameter 'force' on a port"
        )
    ], diff.breaks
    assert not [item for item in diff.additions if "BrokerAuthPort" in item]
