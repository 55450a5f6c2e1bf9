"""The single-process side of bench_tick_to_order.py: ib_async 2.1, one asyncio process.

The same rule as bench/tto_strategy.py: on a bid change of SYMBOL, one resting buy limit of 1
at the bid (``placeOrder``: ib_async writes it to the socket at once, its own throttle at 45
requests/s as the gateway's pacer). Run by the benchmark:
``python bench/tto_ib_async.py PORT CLIENT_ID SYMBOL [EVERY HANDLERS]``; prints "ready" once
subscribed. With EVERY and HANDLERS (the capacity run): HANDLERS callbacks, as the fleet's
4 strategies, each taking every tick and ordering on the bid changes whose cents are its slot
modulo EVERY (the slots spread evenly), as ``bench/tto_strategy.py`` does.
"""
from __future__ import annotations

import math
import sys

from ib_async import IB, LimitOrder, Stock


def main() -> int:
    port, client_id, symbol = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    every = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    handlers = int(sys.argv[5]) if len(sys.argv) > 5 else 1
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

    def sampled(slot: int):
        def on_update_sampled(t) -> None:
            bid = t.bid
            if not math.isfinite(bid) or bid <= 0 or bid == last[slot]:
                return
            last[slot] = bid
            if round(bid * 100) % every == slot:
                ib.placeOrder(contract, LimitOrder("BUY", 1, bid, tif="DAY"))
        return on_update_sampled

    if every == 1 and handlers == 1:
        ticker.updateEvent += on_update
    else:
        last = [None] * every
        for i in range(handlers):
            ticker.updateEvent += sampled(i * every // handlers)
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
