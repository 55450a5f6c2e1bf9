"""The account's values as IB reports them (``reqAccountUpdates``), mirrored for strategies.

The gateway publishes each ``updateAccountValue`` as an ``AccountValue`` on ``acct.value``
(the bus keeps the last of each in its snapshot); a strategy's ``account`` is a mirror of
them. In a backtest the engine publishes the same keys from execution's ``Portfolio``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator

#: keys every source provides (IB sends many more: all are kept)
COMMON_KEYS = ("NetLiquidation", "TotalCashValue", "BuyingPower", "AvailableFunds",
               "GrossPositionValue", "RealizedPnL", "UnrealizedPnL")


class Account(Mapping):
    """``strategy.account["NetLiquidation"]`` -> 1012345.67 (a float when IB's text is a
    number, else the text); ``account.currency("NetLiquidation")`` -> ``"USD"``;
    ``account.id`` the account code (``DU...``). Values of the base currency win over
    per-currency ones of the same key (IB's ``BASE`` rows are skipped). Empty until the
    gateway has reported; a key IB never sent raises ``KeyError`` (use ``get``)."""

    def __init__(self) -> None:
        self.id = ""
        self._values: dict[str, float | str] = {}
        self._currency: dict[str, str] = {}
        self.updated_ns = 0  # host clock of the last value

    def update(self, key: str, value: str, currency: str = "", account: str = "",
               now_ns: int = 0) -> None:
        if currency == "BASE":
            return
        if key in self._currency and self._currency[key] and currency \
                and currency != self._currency[key] and self._currency[key] == "USD":
            return  # a per-currency row of a key already known in the base currency
        try:
            parsed: float | str = float(value)
        except (TypeError, ValueError):
            parsed = value
        self._values[key] = parsed
        self._currency[key] = currency
        if account:
            self.id = account
        self.updated_ns = now_ns

    def currency(self, key: str) -> str:
        return self._currency.get(key, "")

    def __getitem__(self, key: str) -> float | str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {k: self._values[k] for k in COMMON_KEYS if k in self._values}
        return f"Account({self.id or '?'}, {shown})"
