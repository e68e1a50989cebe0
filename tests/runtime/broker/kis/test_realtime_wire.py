"""The KIS real-time frame parser: properties over well-formed and malformed frames (KIS_API.md §7.1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.broker.base import ApprovalKey, BrokerScope, Mode
from runtime.broker.kis.realtime_wire import (
    DEPTH_FIELDS,
    TRADE_FIELDS,
    parse_frame,
    registration_message,
)
from runtime.broker.realtime import (
    DEPTH_TR,
    TRADE_TR,
    Ack,
    AckKind,
    BadFrame,
    Heartbeat,
    OrderBook,
    Registration,
    Trade,
)
from runtime.masking import fingerprint

SCOPE = BrokerScope(Mode.VTS, fingerprint("PSwire"))

# A value KIS could send in a field we do not interpret: anything without the separators.
free_text = st.text(st.characters(exclude_characters="^|", exclude_categories=["Cs"]), max_size=12)
codes = st.from_regex(r"[0-9A-Z]{6}", fullmatch=True)
times = st.from_regex(r"[0-2][0-9][0-5][0-9][0-5][0-9]", fullmatch=True)
ints = st.integers(min_value=-(10**12), max_value=10**12)
naturals = st.integers(min_value=0, max_value=10**12)


@st.composite
def trade_records(draw: st.DrawFn) -> dict[str, str]:
    record = {name: draw(free_text) for name in TRADE_FIELDS}
    record.update(
        MKSC_SHRN_ISCD=draw(codes),
        STCK_CNTG_HOUR=draw(times),
        STCK_PRPR=str(draw(naturals)),
        CNTG_VOL=str(draw(naturals)),
        PRDY_VRSS=str(draw(ints)),
        ACML_VOL=str(draw(naturals)),
    )
    return record


@st.composite
def depth_records(draw: st.DrawFn) -> dict[str, str]:
    record = {name: draw(free_text) for name in DEPTH_FIELDS}
    record.update(MKSC_SHRN_ISCD=draw(codes), BSOP_HOUR=draw(times))
    for n in range(1, 11):
        for name in (f"ASKP{n}", f"BIDP{n}", f"ASKP_RSQN{n}", f"BIDP_RSQN{n}"):
            record[name] = str(draw(st.integers(min_value=0, max_value=10**9)))
    return record


def frame(tr_id: str, records: list[dict[str, str]]) -> str:
    names = TRADE_FIELDS if tr_id == TRADE_TR else DEPTH_FIELDS
    data = "^".join(record[name] for record in records for name in names)
    return f"0|{tr_id}|{len(records):03d}|{data}"


def test_the_field_lists_are_kis_s_46_and_59_names_without_repeats() -> None:
    assert len(TRADE_FIELDS) == 46 == len(set(TRADE_FIELDS))
    assert len(DEPTH_FIELDS) == 59 == len(set(DEPTH_FIELDS))
    assert TRADE_FIELDS[12] == "CNTG_VOL"  # this trade's quantity, not the day's (index 13)
    assert DEPTH_FIELDS[3] == "ASKP1"
    assert DEPTH_FIELDS[58] == "STCK_DEAL_CLS_CODE"


@settings(max_examples=150)
@given(st.lists(trade_records(), min_size=1, max_size=5))
def test_every_well_formed_trade_frame_parses_each_record_by_field_name(
    records: list[dict[str, str]],
) -> None:
    messages = parse_frame(frame(TRADE_TR, records))
    assert len(messages) == len(records)
    for message, record in zip(messages, records, strict=True):
        assert isinstance(message, Trade)
        assert message.tr_id == TRADE_TR
        assert message.code == record["MKSC_SHRN_ISCD"]
        assert message.time == record["STCK_CNTG_HOUR"]
        assert message.price == int(record["STCK_PRPR"])
        assert message.volume == int(record["CNTG_VOL"])
        assert message.change == int(record["PRDY_VRSS"])
        assert dict(message.fields) == record


@settings(max_examples=150)
@given(st.lists(depth_records(), min_size=1, max_size=3))
def test_every_well_formed_order_book_frame_gives_both_sides_best_first(
    records: list[dict[str, str]],
) -> None:
    messages = parse_frame(frame(DEPTH_TR, records))
    assert len(messages) == len(records)
    for message, record in zip(messages, records, strict=True):
        assert isinstance(message, OrderBook)
        expected_asks = [(int(record[f"ASKP{n}"]), int(record[f"ASKP_RSQN{n}"])) for n in range(1, 11)]
        expected_bids = [(int(record[f"BIDP{n}"]), int(record[f"BIDP_RSQN{n}"])) for n in range(1, 11)]
        assert list(message.asks) == [level for level in expected_asks if level[0] > 0]
        assert list(message.bids) == [level for level in expected_bids if level[0] > 0]
        assert message.to_json()["asks"] == [list(level) for level in message.asks]


@settings(max_examples=150)
@given(st.lists(trade_records(), min_size=1, max_size=3), st.integers(min_value=-45, max_value=45))
def test_a_frame_with_the_wrong_field_count_is_one_bad_frame_never_an_exception(
    records: list[dict[str, str]], extra: int
) -> None:
    text = frame(TRADE_TR, records)
    values = text.split("|", 3)[3].split("^")
    if extra == 0 or len(values) + extra <= 0:
        extra = 1
    changed = values[: len(values) + extra] if extra < 0 else values + ["x"] * extra
    prefix = text.rsplit("|", 1)[0]
    messages = parse_frame(f"{prefix}|{'^'.join(changed)}")
    assert len(messages) == 1
    assert isinstance(messages[0], BadFrame)
    assert messages[0].tr_id == TRADE_TR
    assert "fields" in messages[0].reason


@settings(max_examples=400)
@given(st.text(max_size=400))
def test_any_text_at_all_parses_to_messages_without_raising(text: str) -> None:
    messages = parse_frame(text)
    assert messages
    for message in messages:
        assert isinstance(message, Trade | OrderBook | Ack | Heartbeat | BadFrame)


@settings(max_examples=300)
@given(
    st.sampled_from(["0", "1", "2"]),
    st.sampled_from([TRADE_TR, DEPTH_TR, "H0STCNI0", "", "X" * 20]),
    st.text(max_size=5),
    st.text(max_size=300),
)
def test_mangled_data_frames_are_bad_frames_whose_reason_never_repeats_the_data(
    flag: str, tr_id: str, count: str, data: str
) -> None:
    text = f"{flag}|{tr_id}|{count}|{data}"
    for message in parse_frame(text):
        if isinstance(message, BadFrame):
            assert len(data) < 8 or data not in message.reason


def test_encrypted_frames_are_refused_not_decoded() -> None:
    [message] = parse_frame("1|H0STCNI0|001|c2VjcmV0")
    assert isinstance(message, BadFrame)
    assert "encrypted" in message.reason


def test_a_bad_number_in_a_record_is_a_bad_frame() -> None:
    record = {name: "0" for name in TRADE_FIELDS}
    record.update(MKSC_SHRN_ISCD="005930", STCK_CNTG_HOUR="090001", STCK_PRPR="7만")
    [message] = parse_frame(frame(TRADE_TR, [record]))
    assert isinstance(message, BadFrame)
    assert "STCK_PRPR" in message.reason


def test_pingpong_is_a_heartbeat_and_acks_are_classified_by_msg_cd_not_rt_cd() -> None:
    assert parse_frame('{"header":{"tr_id":"PINGPONG","datetime":"20260101090000"}}') == [Heartbeat()]

    def ack(msg_cd: str, rt_cd: str) -> Ack:
        text = json.dumps(
            {
                "header": {"tr_id": TRADE_TR, "tr_key": "005930", "encrypt": "N"},
                "body": {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": "x"},
            }
        )
        [message] = parse_frame(text)
        assert isinstance(message, Ack)
        return message

    assert ack("OPSP0000", "0").kind == AckKind.OK
    assert ack("OPSP0002", "1").kind == AckKind.OK  # rt_cd 1 yet not a failure
    assert ack("OPSP0011", "1").kind == AckKind.APPROVAL_REJECTED
    assert ack("OPSP8996", "9").kind == AckKind.SESSION_IN_USE
    assert ack("OPSP0008", "1").kind == AckKind.LIMIT
    assert ack("OPSP9999", "1").kind == AckKind.ERROR


def test_the_registration_message_is_kis_s_shape_with_secretless_repr() -> None:
    key = ApprovalKey(value="a2585daf-8c09-4587-9fce-8ab893000000", scope=SCOPE, issued_at=datetime.now(UTC))
    message = json.loads(registration_message(Registration(TRADE_TR, "005930"), key, subscribe=True))
    assert message == {
        "header": {"approval_key": key.value, "custtype": "P", "tr_type": "1", "content-type": "utf-8"},
        "body": {"input": {"tr_id": TRADE_TR, "tr_key": "005930"}},
    }
    release = json.loads(registration_message(Registration(DEPTH_TR, "005930"), key, subscribe=False))
    assert release["header"]["tr_type"] == "2"
    assert key.value not in repr(key)
    assert key.value not in str(key)
