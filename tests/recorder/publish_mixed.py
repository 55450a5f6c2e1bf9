"""Test helper process: publish depth and tick batches interleaved with other message types,
all from one source, so the per-source ``seq`` covers every topic. Prints {"sent": N}."""
from __future__ import annotations

import argparse
import json

import zmq

from proto.schema import AccountValue, Alert, Execution, OrderStatus, Position
from services.bus.loadgen import make_batch, wait_until_routed
from services.bus.publisher import Publisher
from services.runtime import config as fleet_config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--source", default="mixed.1")
    args = parser.parse_args()
    cfg = fleet_config.load(run_dir=args.run_dir)
    ctx = zmq.Context()
    pub = Publisher(ctx, cfg.bus.endpoint("bus-in"), args.source)
    if not wait_until_routed(ctx, pub, cfg.bus.endpoint("bus-out"), 60):
        return 1
    for r in range(args.rounds):
        start = r * args.batch
        pub.publish_batch(make_batch("depth", "MSFT", start, args.batch), "md.depth.MSFT")
        pub.publish_batch(make_batch("tick", "MSFT", start, args.batch), "md.tick.MSFT")
        pub.publish(OrderStatus(ib_order_id=r, client_order_id=f"c{r}", status="Submitted",
                                filled=0.0, remaining=10.0))
        pub.publish(Position(account="DU1", symbol="MSFT", quantity=float(r), avg_cost=1.0))
        pub.publish(Execution(exec_id=f"e{r}", ib_order_id=r, client_order_id=f"c{r}", perm_id=r,
                              account="DU1", symbol="MSFT", side="BUY", quantity=1.0, price=1.0,
                              cum_quantity=1.0, avg_price=1.0, exec_time_ns=r))
        pub.publish(AccountValue(account="DU1", key="NetLiquidation", value=str(r)))
        pub.publish(Alert(severity="info", code="test.mixed", text=f"round {r}"))
    print(json.dumps({"sent": pub.sent, "source": args.source}), flush=True)
    ctx.destroy(linger=5000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
