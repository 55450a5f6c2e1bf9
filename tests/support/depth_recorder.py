"""A strategy for the market replay test: it subscribes to the depth of its symbols and
writes, after every depth update it applies (``on_depth``), one JSON line to params.out:
``[src, tseq, position, operation, side, bids, asks]`` with the book it holds then (rows
``[price, size]``, best first). A refused update is written as ``{"refused": ...}``."""
from __future__ import annotations

import json

from services.strategy.base import Strategy


class DepthRecorder(Strategy):
    def on_start(self) -> None:
        self._out = open(self.params["out"], "a", buffering=1)
        self._msg = None
        for symbol in self.symbols:
            self.subscribe(symbol, "depth")

    def handle_depth(self, msg) -> bool:
        self._msg = msg
        ok = super().handle_depth(msg)
        if not ok:
            self._out.write(json.dumps({"refused": [msg.src, msg.tseq, msg.position,
                                                    msg.operation, msg.side]}) + "\n")
        return ok

    def on_depth(self, symbol, book) -> None:
        m = self._msg
        self._out.write(json.dumps([m.src, m.tseq, m.position, m.operation, m.side,
                                    book.bids(), book.asks()]) + "\n")
