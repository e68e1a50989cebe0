"""KIS real-time frames on the wire: field lists, the frame parser and the registration message.

Pure functions over text (KIS_API.md §7.1). The parser never raises: whatever arrives becomes a
message, and a frame it cannot read becomes a :class:`BadFrame` whose reason names counts and
field names only, never values (a frame could carry anything).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runtime.broker.base import ApprovalKey
from runtime.broker.realtime import (
    DEPTH_TR,
    TRADE_TR,
    Ack,
    BadFrame,
    Heartbeat,
    OrderBook,
    Registration,
    StreamMessage,
    Trade,
)
from runtime.errors import StreamFrameError

__all__ = [
    "DEPTH_FIELDS",
    "FIELDS",
    "PINGPONG",
    "TRADE_FIELDS",
    "parse_frame",
    "parse_record",
    "registration_message",
]

PINGPONG = "PINGPONG"

#: H0STCNT0, 46 fields in order (KIS_API.md §7.1).
TRADE_FIELDS: tuple[str, ...] = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS", "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL",
    "ACML_VOL", "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU", "NTBY_CNTG_CSNU", "CTTR",
    "SELN_CNTG_SMTN", "SHNU_CNTG_SMTN", "CCLD_DVSN", "SHNU_RATE", "PRDY_VOL_VRSS_ACML_VOL_RATE",
    "OPRC_HOUR", "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR", "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN",
    "HGPR_VRSS_PRPR", "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN", "LWPR_VRSS_PRPR", "BSOP_DATE",
    "NEW_MKOP_CLS_CODE", "TRHT_YN", "ASKP_RSQN1", "BIDP_RSQN1", "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN",
    "VOL_TNRT", "PRDY_SMNS_HOUR_ACML_VOL", "PRDY_SMNS_HOUR_ACML_VOL_RATE", "HOUR_CLS_CODE",
    "MRKT_TRTM_CLS_CODE", "VI_STND_PRC",
)  # fmt: skip

#: H0STASP0, 59 fields in order (KIS_API.md §7.1).
DEPTH_FIELDS: tuple[str, ...] = (
    "MKSC_SHRN_ISCD", "BSOP_HOUR", "HOUR_CLS_CODE",
    *(f"ASKP{n}" for n in range(1, 11)),
    *(f"BIDP{n}" for n in range(1, 11)),
    *(f"ASKP_RSQN{n}" for n in range(1, 11)),
    *(f"BIDP_RSQN{n}" for n in range(1, 11)),
    "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "OVTM_TOTAL_ASKP_RSQN", "OVTM_TOTAL_BIDP_RSQN",
    "ANTC_CNPR", "ANTC_CNQN", "ANTC_VOL", "ANTC_CNTG_VRSS", "ANTC_CNTG_VRSS_SIGN", "ANTC_CNTG_PRDY_CTRT",
    "ACML_VOL", "TOTAL_ASKP_RSQN_ICDC", "TOTAL_BIDP_RSQN_ICDC", "OVTM_TOTAL_ASKP_ICDC",
    "OVTM_TOTAL_BIDP_ICDC", "STCK_DEAL_CLS_CODE",
)  # fmt: skip

FIELDS: Mapping[str, tuple[str, ...]] = {TRADE_TR: TRADE_FIELDS, DEPTH_TR: DEPTH_FIELDS}
_MAX_FRAME_CHARS = 1 << 20
_TEXT_CHARS = 80


def registration_message(registration: Registration, approval: ApprovalKey, *, subscribe: bool) -> str:
    """The JSON text frame that subscribes (tr_type "1") or unsubscribes ("2") one registration."""
    return json.dumps(
        {
            "header": {
                "approval_key": approval.value,
                "custtype": "P",
                "tr_type": "1" if subscribe else "2",
                "content-type": "utf-8",
            },
            "body": {"input": {"tr_id": registration.tr_id, "tr_key": registration.code}},
        },
        separators=(",", ":"),
    )


def parse_frame(text: str) -> list[StreamMessage]:
    """Every message in one text frame: records of a data frame, an ack, or a PINGPONG heartbeat.

    Never raises. A data frame starts with ``0`` (clear) or ``1`` (encrypted); anything else is
    JSON (KIS_API.md §7.1). A bad data frame yields one BadFrame and no record of it.
    """
    if not text:
        return [BadFrame("", "empty frame")]
    if len(text) > _MAX_FRAME_CHARS:
        return [BadFrame("", f"frame of {len(text)} characters is far too long")]
    if text[0] in "01":
        try:
            return list(_data_frame(text))
        except StreamFrameError as exc:
            return [BadFrame(_tr_id_of(text), exc.message)]
    return [_control_frame(text)]


def _data_frame(text: str) -> list[StreamMessage]:
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise StreamFrameError("a data frame needs 'E|TR_ID|NNN|data'")
    flag, tr_id, count_text, data = parts
    if flag != "0":
        raise StreamFrameError(f"{tr_id[:16]} frame is encrypted or flagged {flag[:4]!r}; not streamed")
    names = FIELDS.get(tr_id)
    if names is None:
        raise StreamFrameError(f"unknown real-time TR {tr_id[:16]!r}")
    if not (len(count_text) == 3 and count_text.isdigit() and int(count_text) > 0):
        raise StreamFrameError(f"{tr_id} frame has a record count that is not 001-999")
    count, values = int(count_text), data.split("^")
    if len(values) != count * len(names):
        raise StreamFrameError(
            f"{tr_id} frame has {len(values)} fields for {count} record(s) of {len(names)}: "
            "the field list changed or the frame is cut"
        )
    width = len(names)
    return [parse_record(tr_id, values[i * width : (i + 1) * width]) for i in range(count)]


def parse_record(tr_id: str, values: list[str]) -> Trade | OrderBook:
    """One record of ``tr_id`` by field name; StreamFrameError for a wrong width or a bad number."""
    names = FIELDS[tr_id]
    if len(values) != len(names):
        raise StreamFrameError(f"{tr_id} record has {len(values)} fields, not {len(names)}")
    fields = dict(zip(names, values, strict=True))
    if tr_id == TRADE_TR:
        return Trade(
            code=_code(fields),
            time=_hhmmss(fields, "STCK_CNTG_HOUR"),
            price=_int(fields, "STCK_PRPR"),
            volume=_int(fields, "CNTG_VOL"),
            change=_int(fields, "PRDY_VRSS"),
            accumulated_volume=_int(fields, "ACML_VOL"),
            fields=fields,
        )
    asks = tuple((_int(fields, f"ASKP{n}"), _int(fields, f"ASKP_RSQN{n}")) for n in range(1, 11))
    bids = tuple((_int(fields, f"BIDP{n}"), _int(fields, f"BIDP_RSQN{n}")) for n in range(1, 11))
    return OrderBook(
        code=_code(fields),
        time=_hhmmss(fields, "BSOP_HOUR"),
        # An empty level is price 0; best first is KIS's own order (ASKP1 lowest ask, BIDP1 highest bid).
        asks=tuple(level for level in asks if level[0] > 0),
        bids=tuple(level for level in bids if level[0] > 0),
        fields=fields,
    )


def _control_frame(text: str) -> StreamMessage:
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):
        return BadFrame("", "control frame is not JSON")
    header = data.get("header") if isinstance(data, dict) else None
    if not isinstance(header, dict):
        return BadFrame("", "control frame has no header object")
    tr_id = _text(header.get("tr_id"))
    if tr_id == PINGPONG:
        return Heartbeat()
    body = data.get("body")
    if not isinstance(body, dict):
        return BadFrame(tr_id, "control frame has no body object")
    msg_cd = _text(body.get("msg_cd"))
    if not msg_cd:
        return BadFrame(tr_id, "control frame has no msg_cd")
    return Ack(tr_id=tr_id, code=_text(header.get("tr_key")), msg_cd=msg_cd, msg1=_text(body.get("msg1")))


def _text(raw: object) -> str:
    return raw[:_TEXT_CHARS] if isinstance(raw, str) else ""


def _tr_id_of(text: str) -> str:
    parts = text.split("|", 2)
    return parts[1][:16] if len(parts) > 1 else ""


def _int(fields: Mapping[str, str], name: str) -> int:
    text = fields[name]
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isdigit() and digits.isascii() and len(digits) <= 18):
        raise StreamFrameError(f"field {name} is not an integer")
    return int(text)


def _code(fields: Mapping[str, str]) -> str:
    code = fields["MKSC_SHRN_ISCD"]
    if not (len(code) == 6 and code.isascii() and code.isalnum()):
        raise StreamFrameError("field MKSC_SHRN_ISCD is not a 6-character code")
    return code


def _hhmmss(fields: Mapping[str, str], name: str) -> str:
    value = fields[name]
    if not (len(value) == 6 and value.isdigit() and value.isascii()):
        raise StreamFrameError(f"field {name} is not HHMMSS")
    return value
