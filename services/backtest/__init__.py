"""``ibfleet backtest``: a strategy over a recording through the live risk and execution engines.

``engine`` is the second ``StrategyHost`` (the live one is ``services.strategy.runner``) and
wires the live ``RiskEngine`` and ``ExecutionEngine`` together as their services do; only the
venue and the clock are simulated: ``matching`` is the venue (the gateway's synchronous reply
and an exchange that matches on the recorded market and answers with IB's reports),
``market`` the recorded market, and the recording's receive times the clock. ``journal`` is
execution's journal in memory; ``account`` reads execution's ``Portfolio`` for the report;
``report`` and ``plot`` turn a run into what a trader reads; ``synthetic`` writes seeded
recordings for tests and demos. See docs/backtest.md.
"""
