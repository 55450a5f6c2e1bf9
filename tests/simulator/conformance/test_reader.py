"""The transcript reader, the alignment rule and the judge of documented differences (no
simulator needed)."""
from __future__ import annotations

import base64

import pytest

from .driver import Msg, align, decode_raw
from .test_transcripts import Difference, EXPECTED_DIFFERENCES, judge
from .transcript import parse_line, split_legs

TEXT = """\
# a comment
handshake {"server_version":200,"connection_time":"20260415 18:28:23 Central European Standard Time"}
server managed_accounts {"accounts":["DU9000001"]}
server next_valid_id {"order_id":294}

client place_order {"order_id":"294","action":"BUY"}
client place_order {"order_id":"295","action":"SELL"}
server open_order {"order_id":294}
server order_status {"order_id":294,"status":"Submitted"}
disconnect

handshake {"server_version":200,"connection_time":"20260415 18:28:34 CET"}
server next_valid_id {"order_id":296}
client req_ids {"num_ids":"1"}
sleep 100ms
client cancel_order {"order_id":"294"}
server api_error {"req_id":294,"code":202,"message":"Order Canceled - reason:"}
sleep 100ms
disconnect
"""


def test_a_transcript_splits_into_legs_greetings_and_steps():
    lines = [line for n, t in enumerate(TEXT.splitlines(), 1) if (line := parse_line(t, n))]
    legs = split_legs(lines)
    assert len(legs) == 2
    first, second = legs
    assert first.connection_zone == "Central European Standard Time"
    assert second.connection_zone == "CET"
    assert [line.verb for line in first.greeting] == ["managed_accounts", "next_valid_id"]
    assert [s.verbs for s in first.steps] == [["place_order", "place_order"]]
    assert [line.verb for line in first.steps[0].server] == ["open_order", "order_status"]
    # a sleep between two requests belongs to the step; one after the answers does not
    assert [s.verbs for s in second.steps] == [["req_ids", "cancel_order"]]
    assert [c.kind for c in second.steps[0].clients] == ["client", "sleep", "client"]
    assert second.steps[0].clients[1].payload == pytest.approx(0.1)


def test_raw_server_frames_decode_with_ibapi():
    body = b"\0".join([b"49", b"1", b"1775931128"]) + b"\0"
    frame = len(body).to_bytes(4, "big") + body
    line = parse_line("raw server " + base64.b64encode(frame).decode())
    (msg,) = decode_raw(line.payload)
    assert (msg.kind, msg.data["time"]) == ("current_time", 1775931128)


def test_alignment_is_an_in_order_subsequence_by_kind_and_key():
    exp = [Msg("open_order", {"order_id": 1}), Msg("order_status", {"order_id": 1, "status": "Filled"})]
    act = [Msg("open_order", {"order_id": 1}), Msg("order_status", {"order_id": 2}),
           Msg("commission_report", {}), Msg("order_status", {"order_id": 1, "status": "Filled"})]
    assert align(exp, act) == [0, 3]
    assert align(exp, act[:2]) == [0, None]
    assert align([Msg("api_error", {"req_id": 1, "code": 202})],
                 [Msg("api_error", {"req_id": 1, "code": 201})]) == [None]


def test_a_documented_difference_must_show_and_must_explain_every_problem(monkeypatch):
    d = Difference("F7", r"^order 285:")
    monkeypatch.setitem(EXPECTED_DIFFERENCES, ("x.txt", "statuses"), (d,))
    assert judge("x.txt", {"statuses": ["order 285: IB [...]"]}) == ([], ["[statuses] (F7) order 285: IB [...]"])
    failures, _ = judge("x.txt", {"statuses": []})
    assert len(failures) == 1 and "no longer shows" in failures[0]
    failures, _ = judge("x.txt", {"statuses": ["order 285: IB", "order 286: IB"]})
    assert failures == ["[statuses] order 286: IB"]
    failures, _ = judge("x.txt", {"kinds": ["leg 0 step 0: extra order_status"]})
    assert len(failures) == 2          # undocumented kinds problem, and F7 not shown
