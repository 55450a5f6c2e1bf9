"""Issue 13 (Why 5): every request kind the simulator does not serve is answered under the
request's own id, so no client waits forever (docs/simulator.md, "Requests the simulator does not
serve", fidelity row F34). ib_async at its version (178); ibapi at 200 (text) and at 226, where
ibapi sends each of these requests as protobuf."""
from __future__ import annotations

import datetime as dt

import pytest
from ib_async import IB, ScannerSubscription, Stock
from ibapi.client import EClient
from ibapi.common import PROTOBUF_MSG_ID, WshEventData
from ibapi.wrapper import EWrapper

from services.simulator import pbwire
from services.simulator import protocol as P
from tests.simulator.conftest import start_sim_at_versions
from tests.simulator.ibapi_client import IbapiClient, Recorder, stock

AAPL = 265598
start_sim_v = start_sim_at_versions()


def test_ib_async_calls_the_simulator_does_not_serve_all_return(start_sim):
    sim = start_sim()
    ib = IB()
    ib.RequestTimeout = 60            # a hang becomes a TimeoutError, and the test fails
    ib.connect("127.0.0.1", sim.port, clientId=51, timeout=60)
    try:
        aapl, = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))
        # minimal real answers
        head = ib.reqHeadTimeStamp(aapl, "TRADES", True)
        assert isinstance(head, dt.datetime) and head.year < dt.datetime.now().year
        assert ib.reqHeadTimeStamp(aapl, "TRADES", True, formatDate=2).tzinfo is not None
        assert ib.reqSecDefOptParams("AAPL", "", "STK", AAPL) == []
        found = ib.reqMatchingSymbols("AAP")
        assert [d.contract.conId for d in found] == [AAPL]
        assert ib.reqMatchingSymbols("ZZZZ") == []
        assert "ScanParameterResponse" in ib.reqScannerParameters()
        assert ib.reqNewsProviders() == []
        assert ib.reqMktDepthExchanges() == []
        assert ib.reqSmartComponents("a6") == []
        assert not ib.reqUserInfo()                      # no white-branding id
        # refused under the request's id: each call returns (ib_async gives its empty value)
        sub = ScannerSubscription(instrument="STK", locationCode="STK.US.MAJOR", scanCode="TOP_PERC_GAIN")
        assert not ib.reqScannerData(sub)
        assert not ib.reqHistogramData(aapl, True, "1 week")
        assert not ib.reqFundamentalData(aapl, "ReportSnapshot")
        assert not ib.reqNewsArticle("BZ", "BZ$123")
        assert not ib.reqHistoricalNews(AAPL, "BZ", "", "", 10)
        assert not ib.calculateImpliedVolatility(aapl, 1.0, 100.0)
        assert not ib.calculateOptionPrice(aapl, 0.3, 100.0)
        assert not ib.getWshMetaData()
        # the connection is healthy afterwards
        assert ib.reqCurrentTime()
    finally:
        ib.disconnect()


class Answers(Recorder):
    """The callbacks of the requests the simulator does not serve."""

    def headTimestamp(self, reqId, headTimestamp): self._add("headTimestamp", reqId, headTimestamp)   # noqa: N802,E704
    def securityDefinitionOptionParameterEnd(self, reqId): self._add("secDefEnd", reqId)   # noqa: N802,E704
    def symbolSamples(self, reqId, contractDescriptions):   # noqa: N802
        self._add("symbolSamples", reqId, [d.contract.conId for d in contractDescriptions])
    def softDollarTiers(self, reqId, tiers): self._add("softDollarTiers", reqId, tiers)   # noqa: N802,E704
    def familyCodes(self, familyCodes): self._add("familyCodes", familyCodes)   # noqa: N802,E704
    def mktDepthExchanges(self, depthMktDataDescriptions): self._add("mktDepthExchanges")   # noqa: N802,E704
    def smartComponents(self, reqId, smartComponentMap): self._add("smartComponents", reqId)   # noqa: N802,E704
    def newsProviders(self, newsProviders): self._add("newsProviders", newsProviders)   # noqa: N802,E704
    def userInfo(self, reqId, whiteBrandingId): self._add("userInfo", reqId, whiteBrandingId)   # noqa: N802,E704
    def scannerParameters(self, xml): self._add("scannerParameters", xml)   # noqa: N802,E704
    def displayGroupList(self, reqId, groups): self._add("displayGroupList", reqId)   # noqa: N802,E704


def test_ibapi_requests_the_simulator_does_not_serve_are_answered_under_their_id(start_sim_v):
    sim = start_sim_v()
    c = IbapiClient(sim.port, 52)
    c.rec = Answers()
    c.client = EClient(c.rec)
    c.connect()
    try:
        assert c.client.serverVersion() == sim.version
        cl = c.client
        # answered
        cl.reqHeadTimeStamp(101, stock("AAPL"), "TRADES", 1, 1)
        cl.reqSecDefOptParams(102, "AAPL", "", "STK", AAPL)
        cl.reqMatchingSymbols(103, "MSF")
        cl.reqSoftDollarTiers(104)
        cl.reqSmartComponents(105, "a6")
        cl.reqUserInfo(106)
        cl.queryDisplayGroups(107)
        cl.reqFamilyCodes()
        cl.reqMktDepthExchanges()
        cl.reqNewsProviders()
        cl.reqScannerParameters()
        # refused under their ids
        from ibapi.scanner import ScannerSubscription as IbScan
        cl.reqScannerSubscription(201, IbScan(), [], [])
        cl.reqHistogramData(203, stock("AAPL"), True, "1 week")
        cl.reqNewsArticle(204, "BZ", "BZ$1", [])
        cl.reqHistoricalNews(205, AAPL, "BZ", "", "", 10, [])
        cl.calculateImpliedVolatility(206, stock("AAPL"), 1.0, 100.0, [])
        cl.calculateOptionPrice(207, stock("AAPL"), 0.3, 100.0, [])
        cl.reqWshMetaData(208)
        cl.reqWshEventData(209, WshEventData())
        cl.reqHeadTimeStamp(210, stock("NOPE"), "TRADES", 1, 1)     # unknown contract: 200
        (_, head), = c.wait("headTimestamp", lambda e: e[0] == 101, deadline=60)
        assert dt.datetime.strptime(head, "%Y%m%d-%H:%M:%S").year >= 1990
        c.wait("secDefEnd", lambda e: e[0] == 102, deadline=60)
        (_, con_ids), = c.wait("symbolSamples", lambda e: e[0] == 103, deadline=60)
        assert con_ids == [272093]                                     # MSFT
        c.wait("softDollarTiers", lambda e: e[0] == 104, deadline=60)
        c.wait("smartComponents", lambda e: e[0] == 105, deadline=60)
        c.wait("userInfo", lambda e: e[0] == 106, deadline=60)
        c.wait("displayGroupList", lambda e: e[0] == 107, deadline=60)
        for name in ("familyCodes", "mktDepthExchanges", "newsProviders", "scannerParameters"):
            c.wait(name, deadline=60)
        for req_id, code in ((201, 162), (203, 162), (204, 10276), (205, 10276),
                             (206, 200), (207, 200), (208, 10276), (209, 10276), (210, 200)):
            c.wait_error(code, req_id, deadline=60)
        # nothing was answered with reqId -1 or 321
        assert not [e for e in c.errors() if e[1] in (320, 321)]
        cl.reqCurrentTime()
        c.wait("currentTime", deadline=60)
    finally:
        c.disconnect()


class _Writer(EClient):
    def __init__(self, version: int) -> None:
        super().__init__(EWrapper())
        self.serverVersion_ = version
        self.connState = EClient.CONNECTED
        self.sent: list[tuple[int, bytes | str]] = []

    def isConnected(self):   # noqa: N802
        return True

    def sendMsg(self, msgId, msg):   # noqa: N802
        self.sent.append((int(msgId), msg))

    def sendMsgProtoBuf(self, msgId, msg):   # noqa: N802
        self.sent.append((int(msgId), msgId.to_bytes(4, "big") + msg))


OTHER_CALLS = [
    ("reqHeadTimeStamp", (7, stock("AAPL"), "TRADES", 1, 2)),
    ("cancelHeadTimeStamp", (7,)),
    ("reqHistogramData", (7, stock("AAPL"), True, "1 week")), ("cancelHistogramData", (7,)),
    ("reqHistoricalTicks", (7, stock("AAPL"), "", "20260101 10:00:00 UTC", 10, "TRADES", 1, True, [])),
    ("reqSecDefOptParams", (7, "AAPL", "", "STK", AAPL)), ("reqSoftDollarTiers", (7,)),
    ("reqFamilyCodes", ()), ("reqMatchingSymbols", (7, "AA")), ("reqMktDepthExchanges", ()),
    ("reqSmartComponents", (7, "a6")), ("reqUserInfo", (7,)), ("reqNewsProviders", ()),
    ("reqNewsArticle", (7, "BZ", "BZ$1", [])), ("reqHistoricalNews", (7, AAPL, "BZ", "", "", 10, [])),
    ("reqWshMetaData", (7,)), ("cancelWshMetaData", (7,)), ("reqWshEventData", (7, WshEventData())),
    ("cancelWshEventData", (7,)), ("reqScannerParameters", ()), ("cancelScannerSubscription", (7,)),
    ("calculateImpliedVolatility", (7, stock("AAPL"), 1.0, 100.0, [])),
    ("calculateOptionPrice", (7, stock("AAPL"), 0.3, 100.0, [])),
    ("cancelCalculateImpliedVolatility", (7,)), ("cancelCalculateOptionPrice", (7,)),
    ("queryDisplayGroups", (7,)), ("unsubscribeFromGroupEvents", (7,)),
    ("replaceFA", (7, 1, "<x/>")), ("requestFA", (1,)),
]


@pytest.mark.parametrize("method,args", OTHER_CALLS, ids=[m for m, _ in OTHER_CALLS])
def test_protobuf_forms_of_unserved_requests_decode_to_their_text(method, args):
    """At 226 ibapi sends these as protobuf: pbwire decodes each to the v200 text fields, so the
    session reads the request's id from it as from the text form."""
    text, proto = _Writer(200), _Writer(P.MAX_SERVED)
    getattr(text, method)(*args)
    getattr(proto, method)(*args)
    (t_id, t_msg), = text.sent
    (p_id, p_body), = proto.sent
    assert p_id > PROTOBUF_MSG_ID, f"ibapi sent {method} in text at {P.MAX_SERVED}"
    t_fields = [str(t_id)] + t_msg.split("\0")[:-1]
    assert pbwire.request_fields(p_body, P.MAX_SERVED) == t_fields
