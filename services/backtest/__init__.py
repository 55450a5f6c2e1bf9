"""``ibfleet backtest``: a strategy, real risk and simulated execution over a recording.

``engine`` is the second ``StrategyHost`` (the live one is ``services.strategy.runner``);
``matching`` simulates execution from the recorded market; ``ledger`` keeps PnL and
commissions; ``report`` and ``plot`` turn a run into what a trader reads; ``synthetic``
writes seeded recordings for tests and demos. See docs/backtest.md.
"""
