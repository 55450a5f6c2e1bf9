"""The single-process side of bench_tick_to_order.py: ib_async 2.1, one asyncio process.

The same rule as bench/tto_strategy.py: on a bid change of SYMBOL, one resting buy limit of 1
at the bid (``placeOrder``: ib_async writes it to the socket at once, its own throttle at 45
requests/s as the gateway's pacer). Run by the benchmark:
``python bench/tto_ib_async.py PORT CLIENT_ID SYMBOL``; prints "ready" once subscribed.
"""
from __future__ import annotations

import math
import sys

from ib_async import IB, LimitOrder, Stock


def main() -> int:
    port, client_id, symbol = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=client_id, timeout=30)
    contract = Stock(symbol, "SMART", "USD")
    ib.qualifyContracts(contract)
    ticker = ib.reqMktData(contract, "", False, False)
    state = {"bid": None}

    def on_update(t) -> None:
        bid = t.bid
        if not math.isfinite(bid) or bid <= 0 or bid == state["bid"]:
            return
        before, state["bid"] = state["bid"], bid
        if before is None:
            return
        ib.placeOrder(contract, LimitOrder("BUY", 1, bid, tif="DAY"))

    ticker.updateEvent += on_update
    print("ready", flush=True)
    try:
        ib.run()
    except KeyboardInterrupt:
        pass
    finally:
        ib.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
