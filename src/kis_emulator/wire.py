"""Transport-neutral request and reply values, and the two KIS error body shapes.

The HTTP layer turns bytes into a ``Request`` and a ``Reply`` back into bytes; everything between
is plain logic that never touches a socket, which keeps the state lock's critical section short.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

JSON_CONTENT_TYPE: Final = "application/json; charset=UTF-8"
KST: Final = ZoneInfo("Asia/Seoul")
KIS_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Request:
    """One HTTP request as the emulator sees it.

    ``headers`` and ``query`` are keyed case-insensitively: header names lower-cased, query
    names upper-cased (KIS samples send both ``FID_INPUT_ISCD`` and ``fid_input_iscd``).
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def build(cls, method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> Request:
        """Split ``target`` into path and query and normalise the header and query names."""
        path, _, raw_query = target.partition("?")
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            query.setdefault(name.upper(), value)
        return cls(
            method=method.upper(),
            path=path,
            headers={name.lower(): value for name, value in headers.items()},
            query=query,
            body=body,
        )

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Reply:
    """What to send back.

    Attributes:
        status: HTTP status code.
        body: the exact body bytes (may deliberately be broken JSON for faults).
        content_type: the Content-Type header value.
        headers: extra response headers, in order.
        delay: real seconds to sleep before answering (the ``slow`` fault), outside the state lock.
        reset: send only a prefix of the response, then reset the TCP connection.
        error_code: the KIS error code the body carries, if any (for counters and tests).
    """

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    reset: bool = False
    error_code: str | None = None

    def json(self) -> Any:
        """Decode the body as JSON (for tests and admin use)."""
        return json.loads(self.body)


def encode_json(payload: object) -> bytes:
    """UTF-8 JSON with Korean left readable, as KIS sends it."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON reply with the given status."""
    return Reply(status=status, body=encode_json(payload), headers=headers)


def rt_error(status: int, msg_cd: str, msg1: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """An ordinary-call error: ``{"rt_cd":"1","msg1":...,"msg_cd":...}``.

    Key order follows captured gateway errors (KIS_API.md §5): rt_cd, msg1, msg_cd.
    """
    payload = {"rt_cd": "1", "msg1": msg1, "msg_cd": msg_cd}
    return Reply(status=status, body=encode_json(payload), headers=headers, error_code=msg_cd)


def token_error(status: int, error_code: str, description: str) -> Reply:
    """A token-endpoint error: ``{"error_description":...,"error_code":...}`` (KIS_API.md §4)."""
    payload = {"error_description": description, "error_code": error_code}
    return Reply(status=status, body=encode_json(payload), error_code=error_code)


def kis_time(moment: datetime) -> str:
    """``moment`` as the naive KST ``YYYY-MM-DD HH:MM:SS`` string KIS uses."""
    return moment.astimezone(KST).strftime(KIS_TIME_FORMAT)


def new_gt_uid() -> str:
    """A 32-character alphanumeric global transaction id for the ``gt_uid`` header."""
    return secrets.token_hex(16)
