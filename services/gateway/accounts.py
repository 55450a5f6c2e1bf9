"""The account check: the bridge trades only on the account the config expects.

IB names the account(s) of the login in ``managedAccounts``, right after connecting (before or
around ``nextValidId``). Paper account codes start with "D" (DU1234567, DF... for a paper
advisor); live ones do not (U1234567). The rules, pure and unit-tested:

- ``account`` set in the config: IB must list exactly that account (it is the one traded);
- otherwise, unless ``live``: every account IB lists must be a paper account;
- IB listing no account at all is refused too.

The gateway (service.py) holds everything until the check has passed: no reconciliation, no
subscription, no order; a refused account keeps it in ``connected`` (never ``synchronised``),
refusing order commands, with a critical alert.
"""
from __future__ import annotations

from dataclasses import dataclass


def is_paper(account: str) -> bool:
    return account.startswith("D")


@dataclass(frozen=True)
class AccountCheck:
    """The verdict on one ``managedAccounts``: ``account`` the one to trade ("" if refused),
    ``problem`` why not ("" if accepted)."""

    accounts: tuple[str, ...]
    account: str = ""
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def check_accounts(accounts: str, live: bool, expected: str = "") -> AccountCheck:
    """``accounts``: IB's comma-separated list; ``live``: the config's live opt-in;
    ``expected``: the config's ``gateway.account`` ("" for any account the rules allow)."""
    listed = tuple(a.strip() for a in accounts.split(",") if a.strip())
    if not listed:
        return AccountCheck(listed, problem="IB named no account (empty managedAccounts)")
    if expected:
        if expected not in listed:
            return AccountCheck(listed, problem=(
                f"the config expects account {expected} (gateway.account) but IB manages "
                f"{', '.join(listed)}"))
        chosen = expected
    else:
        chosen = listed[0]
    if not live:
        live_ones = [a for a in listed if not is_paper(a)]
        if live_ones:
            return AccountCheck(listed, problem=(
                f"account {', '.join(live_ones)} is not a paper account (paper codes start "
                f"with D) and the config is paper (gateway.live = false): this may be a LIVE "
                f"account"))
    return AccountCheck(listed, account=chosen)
