"""Injected faults: broken answers a real gateway (or the network in front of it) can give.

A fault applies to the next ``count`` matching requests. Except for ``slow`` (which delays the
normal answer), a fault *replaces* the answer: the request is not processed, so e.g. a faulted
tokenP mints no token and does not start the 1-per-minute window. That keeps retry tests
predictable: the retry meets the emulator exactly as the first attempt would have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from .wire import Reply, encode_json, rt_error, token_error

FaultKind = Literal[
    "html_502",
    "malformed_json",
    "missing_fields",
    "slow",
    "reset",
    "error_code",
    "empty_body",
    "non_utf8",
    "huge_body",
]
FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))

HUGE_BODY_BYTES: Final = 2 * 1024 * 1024

_NGINX_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class Fault:
    """One pending fault. ``remaining`` counts down as requests consume it."""

    kind: str
    remaining: int
    path: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        """Whether a request to ``path`` should receive this fault."""
        return self.path is None or path.startswith(self.path)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly view for the admin API."""
        return {
            "kind": self.kind,
            "remaining": self.remaining,
            "path": self.path,
            "params": dict(self.params),
        }


def make_fault(kind: str, count: int, path: str | None, params: Mapping[str, Any]) -> Fault:
    """Validate and build a fault.

    Raises:
        ValueError: unknown kind, count < 1, or parameters the kind needs are missing or wrong.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, not {count!r}")
    if path is not None and not isinstance(path, str):
        raise ValueError("path must be a string prefix or null")
    if kind == "slow":
        seconds = params.get("seconds", 1.0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 300:
            raise ValueError("slow fault needs 0 <= seconds <= 300")
    if kind == "error_code":
        if not isinstance(params.get("msg_cd"), str):
            raise ValueError("error_code fault needs a msg_cd string")
        status = params.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("error_code status must be an HTTP status int")
    return Fault(kind=kind, remaining=count, path=path, params=dict(params))


def _is_token_endpoint(path: str) -> bool:
    return path.startswith("/oauth2/")


def _missing_fields_body(path: str) -> dict[str, Any]:
    # The endpoint's key fields are absent; the rest looks normal.
    if path == "/oauth2/tokenP":
        return {"token_type": "Bearer", "expires_in": 86400}
    if path == "/oauth2/revokeP":
        return {"message": "접근토큰 폐기에 성공하였습니다"}
    if path == "/oauth2/Approval":
        return {}
    if path == "/uapi/hashkey":
        return {"BODY": {}}
    return {"msg_cd": "MCA00000", "msg1": "정상처리 되었습니다!"}


def render_fault(fault: Fault, path: str, extra_headers: tuple[tuple[str, str], ...]) -> Reply:
    """The reply that replaces the normal answer (not used for ``slow``)."""
    kind = fault.kind
    if kind == "html_502":
        return Reply(status=502, body=_NGINX_502, content_type="text/html")
    if kind == "malformed_json":
        whole = '{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9","token_type":"Bearer"}'
        if not _is_token_endpoint(path):
            whole = '{"output":{"stck_prpr":"71000","prdy_vrss":"0"},"rt_cd":"0","msg_cd":"MCA00000"}'
        return Reply(status=200, body=whole[: len(whole) // 2].encode("utf-8"), headers=extra_headers)
    if kind == "missing_fields":
        return Reply(status=200, body=encode_json(_missing_fields_body(path)), headers=extra_headers)
    if kind == "error_code":
        status = int(fault.params.get("status", 200))
        msg_cd = str(fault.params["msg_cd"])
        msg1 = str(fault.params.get("msg1", "emulator injected error"))
        if _is_token_endpoint(path):
            return token_error(status, msg_cd, msg1)
        return rt_error(status, msg_cd, msg1, extra_headers)
    if kind == "empty_body":
        return Reply(status=200, body=b"", headers=extra_headers)
    if kind == "non_utf8":
        # Valid JSON structure, but the msg1 bytes are not UTF-8 (0xff never appears in UTF-8).
        return Reply(
            status=200,
            body=b'{"rt_cd":"0","msg_cd":"MCA00000","msg1":"\xff\xfe\xc3\x28"}',
            headers=extra_headers,
        )
    if kind == "huge_body":
        head = {"rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다!"}
        padding = "A" * HUGE_BODY_BYTES
        body = json.dumps({**head, "padding": padding}, ensure_ascii=False).encode("utf-8")
        return Reply(status=200, body=body, headers=extra_headers)
    if kind == "reset":
        return Reply(
            status=200, body=b'{"rt_cd":"0","msg_cd":"MCA00000","output":{"stck_prpr":"7', reset=True
        )
    raise ValueError(f"fault kind {kind!r} has no replacement reply")


class FaultQueue:
    """Pending faults in injection order. Not thread-safe: the caller holds the state lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue ``fault`` behind the ones already pending."""
        self._faults.append(fault)

    def take(self, path: str) -> Fault | None:
        """Consume one use of the oldest fault matching ``path``."""
        for index, fault in enumerate(self._faults):
            if fault.matches(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[index]
                return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Descriptions of the faults still pending."""
        return [fault.describe() for fault in self._faults]

    def clear(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()
