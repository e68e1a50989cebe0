"""Ordinary ``/uapi`` calls once authenticated: inquire-price, inquire-balance and hashkey.

Each handler gets a ``CallContext`` and returns a reply with the rt_cd/msg_cd/msg1 fields.
Business errors (bad stock code, missing account field) answer HTTP 200 with ``rt_cd`` "1", which
is how KIS reports them; their codes are emulator-chosen (see ``codes.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .accounts import Mode
from .codes import BAD_MARKET_CODE, BALANCE_OK, NO_SUCH_STOCK, QUOTE_OK, missing_input
from .config import EmulatorConfig
from .market import (
    MARKET_CODES,
    balance_summary,
    continuation_key,
    holding_row,
    is_valid_code,
    parse_continuation_key,
    quote_for,
)
from .wire import Reply, Request, json_reply, new_gt_uid, rt_error

_CANO: Final = re.compile(r"\d{8}")
_ACNT_PRDT_CD: Final = re.compile(r"\d{2}")


def uapi_headers(request: Request, tr_cont: str = "D") -> tuple[tuple[str, str], ...]:
    """Headers on every ``/uapi`` response: tr_id echoed, tr_cont, a fresh gt_uid."""
    return (("tr_id", request.header("tr_id") or ""), ("tr_cont", tr_cont), ("gt_uid", new_gt_uid()))


@dataclass(frozen=True)
class CallContext:
    """Everything a call handler may read."""

    request: Request
    mode: Mode
    config: EmulatorConfig

    def ok(self, payload: dict[str, Any], tr_cont: str = "D") -> Reply:
        """A 200 reply with the /uapi headers."""
        return json_reply(200, payload, uapi_headers(self.request, tr_cont))

    def business_error(self, code_and_text: tuple[str, str]) -> Reply:
        """A 200 reply with ``rt_cd`` "1" (KIS reports input errors this way)."""
        return rt_error(200, *code_and_text, headers=uapi_headers(self.request))


CallHandler = Callable[[CallContext], Reply]


def inquire_price(ctx: CallContext) -> Reply:
    """``GET /uapi/domestic-stock/v1/quotations/inquire-price`` (FHKST01010100)."""
    market = ctx.request.query.get("FID_COND_MRKT_DIV_CODE", "")
    if market.upper() not in MARKET_CODES:
        return ctx.business_error(BAD_MARKET_CODE)
    code = ctx.request.query.get("FID_INPUT_ISCD")
    if not code:
        return ctx.business_error(missing_input("FID_INPUT_ISCD"))
    if not is_valid_code(code):
        return ctx.business_error(NO_SUCH_STOCK)
    msg_cd, msg1 = QUOTE_OK
    return ctx.ok({"output": quote_for(code).output(), "rt_cd": "0", "msg_cd": msg_cd, "msg1": msg1})


def inquire_balance(ctx: CallContext) -> Reply:
    """``GET /uapi/domestic-stock/v1/trading/inquire-balance`` with tr_cont paging."""
    query = ctx.request.query
    cano = query.get("CANO", "")
    if not _CANO.fullmatch(cano):
        return ctx.business_error(missing_input("CANO"))
    prdt = query.get("ACNT_PRDT_CD", "")
    if not _ACNT_PRDT_CD.fullmatch(prdt):
        return ctx.business_error(missing_input("ACNT_PRDT_CD"))
    offset = 0
    if (ctx.request.header("tr_cont") or "").strip().upper() == "N":
        parsed = parse_continuation_key(query.get("CTX_AREA_NK100", ""), cano, prdt)
        if parsed is None:
            return ctx.business_error(missing_input("CTX_AREA_NK100"))
        offset = parsed
    rows = [holding_row(holding) for holding in ctx.config.holdings]
    size = ctx.config.page_size_for(ctx.mode)
    end = offset + size
    more = end < len(rows)
    msg_cd, msg1 = BALANCE_OK
    payload = {
        "ctx_area_fk100": query.get("CTX_AREA_FK100", ""),
        "ctx_area_nk100": continuation_key(cano, prdt, end) if more else "",
        "output1": rows[offset:end],
        "output2": [balance_summary(rows, ctx.config.cash)],
        "rt_cd": "0",
        "msg_cd": msg_cd,
        "msg1": msg1,
    }
    return ctx.ok(payload, tr_cont="M" if more else "D")


def canonical_hash(body: object) -> str:
    """SHA-256 hex of the body's canonical JSON (sorted keys, no spaces, UTF-8).

    KIS does not document its hash input; canonical JSON makes the value reproducible by tests.
    """
    canonical = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def hashkey(ctx: CallContext) -> Reply:
    """``POST /uapi/hashkey``: echo the body with its hash."""
    try:
        body = json.loads(ctx.request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict):
        return rt_error(500, "EGW00101", "유효하지 않은 요청입니다.", uapi_headers(ctx.request))
    return ctx.ok({"BODY": body, "HASH": canonical_hash(body)})


@dataclass(frozen=True)
class CallRoute:
    """One /uapi endpoint: method, the tr_id per mode (None = no tr_id needed), handler."""

    method: str
    tr_ids: dict[Mode, str] | None
    handler: CallHandler


CALL_ROUTES: Final[dict[str, CallRoute]] = {
    "/uapi/domestic-stock/v1/quotations/inquire-price": CallRoute(
        "GET", {"VTS": "FHKST01010100", "REAL": "FHKST01010100"}, inquire_price
    ),
    "/uapi/domestic-stock/v1/trading/inquire-balance": CallRoute(
        "GET", {"VTS": "VTTC8434R", "REAL": "TTTC8434R"}, inquire_balance
    ),
}

HASHKEY_PATH: Final = "/uapi/hashkey"
HASHKEY_ROUTE: Final = CallRoute("POST", None, hashkey)
