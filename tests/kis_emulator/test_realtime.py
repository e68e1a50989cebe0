"""The emulator's WebSocket quote server, spoken to with a bare ``websockets`` client (no runtime code)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from kis_emulator import EmulatorConfig, KISEmulator, demo_account


@pytest.fixture
def emulator() -> Iterator[KISEmulator]:
    config = EmulatorConfig(ws_tick_interval=0.01, ws_ping_interval=5.0, ws_multi_record_every=3)
    with KISEmulator("VTS", config=config) as running:
        yield running


def approval_key(emulator: KISEmulator) -> str:
    account = demo_account("VTS")
    reply = urllib3.request(
        "POST",
        emulator.base_url + "/oauth2/Approval",
        json={"grant_type": "client_credentials", "appkey": account.app_key, "secretkey": account.app_secret},
    )
    assert reply.status == 200
    key = reply.json()["approval_key"]
    assert isinstance(key, str)
    return key


def message(key: str, tr_id: str, code: str, tr_type: str = "1") -> str:
    return json.dumps(
        {
            "header": {"approval_key": key, "custtype": "P", "tr_type": tr_type, "content-type": "utf-8"},
            "body": {"input": {"tr_id": tr_id, "tr_key": code}},
        }
    )


def ack(ws: ClientConnection) -> dict[str, Any]:
    """The next JSON control frame other than PINGPONG (data frames in between are skipped)."""
    while True:
        frame = ws.recv(timeout=10)
        assert isinstance(frame, str)
        if frame[0] not in "01":
            data: dict[str, Any] = json.loads(frame)
            if data["header"]["tr_id"] != "PINGPONG":
                return data


def drain(ws: ClientConnection) -> None:
    """Read until the server closes the connection."""
    for _ in range(10_000):
        ws.recv(timeout=5)


def data_frames(ws: ClientConnection, n: int) -> list[str]:
    frames: list[str] = []
    while len(frames) < n:
        frame = ws.recv(timeout=10)
        assert isinstance(frame, str)
        if frame[0] == "0":
            frames.append(frame)
    return frames


def test_acks_follow_kis_codes_for_subscribe_repeat_release_and_unknown_release(
    emulator: KISEmulator,
) -> None:
    key = approval_key(emulator)
    with connect(emulator.ws_url + "/tryitout") as ws:
        ws.send(message(key, "H0STCNT0", "005930"))
        first = ack(ws)
        assert first["header"] == {"tr_id": "H0STCNT0", "tr_key": "005930", "encrypt": "N"}
        assert first["body"]["msg_cd"] == "OPSP0000"
        assert first["body"]["rt_cd"] == "0"
        assert first["body"]["msg1"] == "SUBSCRIBE SUCCESS"
        assert len(first["body"]["output"]["iv"]) == 16
        ws.send(message(key, "H0STCNT0", "005930"))
        assert ack(ws)["body"] | {"output": None} == {
            "rt_cd": "1",
            "msg_cd": "OPSP0002",
            "msg1": "ALREADY IN SUBSCRIBE",
            "output": None,
        }
        ws.send(message(key, "H0STCNT0", "005930", tr_type="2"))
        assert ack(ws)["body"]["msg_cd"] == "OPSP0001"
        ws.send(message(key, "H0STCNT0", "005930", tr_type="2"))
        assert ack(ws)["body"]["msg_cd"] == "OPSP0003"
        ws.send("{not json")
        assert ack(ws)["body"]["msg_cd"] == "OPSP9999"
        ws.send(message(key, "H0STCNI0", "005930"))
        assert ack(ws)["body"]["msg_cd"] == "OPSP8991"


def test_frames_have_kis_s_shape_field_counts_and_sometimes_several_records(emulator: KISEmulator) -> None:
    key = approval_key(emulator)
    with connect(emulator.ws_url) as ws:
        ws.send(message(key, "H0STCNT0", "005930"))
        ws.send(message(key, "H0STASP0", "000660"))
        frames = data_frames(ws, 30)
    counts = set()
    for frame in frames:
        flag, tr_id, count, data = frame.split("|", 3)
        assert flag == "0"
        width = {"H0STCNT0": 46, "H0STASP0": 59}[tr_id]
        assert len(data.split("^")) == int(count) * width
        counts.add((tr_id, count))
    assert ("H0STCNT0", "002") in counts
    assert ("H0STASP0", "001") in counts


def test_the_42nd_registration_gets_opsp0008_and_the_first_41_stay(emulator: KISEmulator) -> None:
    key = approval_key(emulator)
    with connect(emulator.ws_url) as ws:
        for n in range(1, 43):
            ws.send(message(key, "H0STCNT0", f"{n:06d}"))
        codes = [ack(ws)["body"]["msg_cd"] for _ in range(42)]
        assert codes == ["OPSP0000"] * 41 + ["OPSP0008"]
        assert data_frames(ws, 5)  # the session goes on
    assert emulator.stream_counters()["ws_subscribes"] == 41


def test_a_second_session_of_the_app_key_gets_opsp8996_and_is_dropped(emulator: KISEmulator) -> None:
    with connect(emulator.ws_url) as first, connect(emulator.ws_url) as second:
        first.send(message(approval_key(emulator), "H0STCNT0", "005930"))
        assert ack(first)["body"]["msg_cd"] == "OPSP0000"
        second.send(message(approval_key(emulator), "H0STCNT0", "005930"))  # another key, same app key
        refused = ack(second)
        assert refused == {
            "header": {"tr_id": "(null)", "tr_key": "", "encrypt": "N"},
            "body": {"rt_cd": "9", "msg_cd": "OPSP8996", "msg1": "ALREADY IN USE appkey"},
        }
        with pytest.raises(ConnectionClosed):
            second.recv(timeout=5)
        assert data_frames(first, 5)
    assert emulator.stream_counters()["ws_sessions_refused"] == 1


def test_voided_approval_keys_get_opsp0011(emulator: KISEmulator) -> None:
    key = approval_key(emulator)
    assert emulator.void_approval_keys() == 1
    with connect(emulator.ws_url) as ws:
        ws.send(message(key, "H0STCNT0", "005930"))
        body = ack(ws)["body"]
        assert body["msg_cd"] == "OPSP0011"
        assert body["rt_cd"] == "1"


def test_pingpong_unanswered_gets_the_session_cut_and_echoed_keeps_it(emulator: KISEmulator) -> None:
    emulator.set_config(ws_ping_interval=0.1, ws_unanswered_pings=2)
    with connect(emulator.ws_url) as silent, pytest.raises(ConnectionClosed):
        drain(silent)
    with connect(emulator.ws_url) as polite:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            frame = polite.recv(timeout=5)
            assert isinstance(frame, str)
            header = json.loads(frame)["header"]
            assert header["tr_id"] == "PINGPONG"
            assert len(header["datetime"]) == 14
            polite.send(frame)
    assert emulator.stream_counters()["ws_pingpong_echoed"] >= 5


def test_stream_faults_and_counters_over_the_admin_http_api(emulator: KISEmulator) -> None:
    admin = emulator.base_url + "/__emulator__/"
    queued = urllib3.request("POST", admin + "stream/faults", json={"kind": "bad_frame", "after_frames": 1})
    assert queued.status == 200
    assert urllib3.request("POST", admin + "stream/faults", json={"kind": "meteor"}).status == 400
    key = approval_key(emulator)
    with connect(emulator.ws_url) as ws:
        ws.send(message(key, "H0STCNT0", "005930"))
        frames = data_frames(ws, 3)
        widths = [len(f.split("|", 3)[3].split("^")) % 46 for f in frames]
        assert widths.count(45) == 1  # exactly one frame one field short
        dropped = urllib3.request("POST", admin + "stream/drop")
        assert dropped.json() == {"dropped": 1}
        with pytest.raises(ConnectionClosed):
            drain(ws)
    voided = urllib3.request("POST", admin + "void-approval-keys").json()
    assert voided == {"voided": 1}
    counters = urllib3.request("GET", admin + "stream").json()
    assert counters["approval_requests"] == 1
    assert counters["ws_drops"] == 1
    assert counters["ws_faults_applied"] == 1
