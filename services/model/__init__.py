"""The trading model: the one definition of each fact every process shares.

- ``orders``: OrderSide, OrderType, TimeInForce; OrderState and the one transition table.
- ``portfolio``: fills -> positions (execId-deduplicated, corrections replace), commissions,
  realized PnL net of commissions, per trading day.
- ``trading_day``: when a trading day begins, in the exchange's zone.
- ``services.runtime.instruments``: instrument reference data (tick, lot, multiplier).

Execution owns the state these describe; risk, strategies and the backtest import the same
definitions and keep mirrors of execution's numbers, never rules of their own.
"""
