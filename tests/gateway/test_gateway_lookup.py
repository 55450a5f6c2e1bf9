"""The operator asks the gateway whether IB knows symbols (``ContractLookup``, what ``ibfleet
strategy add`` checks a strategy's symbols with): answered on the gateway's reliable socket
with each symbol's conId or IB's reason; refused from anyone but the operator; "cannot be
checked" while the gateway is not on an IB session. Real simulator, bus and gateway."""
from __future__ import annotations

import zmq

from proto.schema import Ack, ContractLookup, ContractLookupResult
from services.bus.reliable import ReliableClient
from tests.support.processes import wait_for


def _ask(fleet, symbols: list[str], source: str = "cli.test"):
    client = ReliableClient(zmq.Context.instance(), fleet.cfg.bus.endpoint("gateway"), source,
                            resend_after=1.0)
    try:
        seq = client.send(ContractLookup(symbols=symbols))
        got: list = []

        def answered():
            got.extend(client.poll(50))
            return next((m for m in got if isinstance(m, ContractLookupResult)), None) or next(
                (m for m in got if isinstance(m, Ack) and m.ref_seq == seq and not m.ok), None)
        return wait_for(answered, 60, what=f"the gateway's answer about {symbols}")
    finally:
        client.close()


def test_the_operator_learns_which_symbols_ib_knows(fleet):
    fleet.start_gateway()
    fleet.bus.wait_state("synchronised")
    result = _ask(fleet, ["AAPL", "ZZZQX", "EUR.USD"])
    assert isinstance(result, ContractLookupResult) and result.connected, result
    assert result.resolved == {"AAPL": 265598, "EUR.USD": result.resolved["EUR.USD"]}
    assert list(result.failed) == ["ZZZQX"] and "200" in result.failed["ZZZQX"]
    again = _ask(fleet, ["AAPL"])  # known now: from the cache, at once
    assert again.resolved == {"AAPL": 265598} and not again.failed

    refused = _ask(fleet, ["AAPL"], source="execution.test")
    assert isinstance(refused, Ack) and not refused.ok and "operator" in refused.error

    # off the IB session, the symbols cannot be checked: said so, not "unknown"
    mark = fleet.bus.mark()
    fleet.procs.kill(next(p for p in fleet.procs.procs if p.name == "sim"))
    fleet.bus.wait_state("disconnected", since=mark)
    down = _ask(fleet, ["MSFT"])
    assert isinstance(down, ContractLookupResult) and not down.connected, down
    assert "cannot be checked" in down.text and not down.failed
