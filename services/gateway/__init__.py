"""The gateway bridge: the only process that talks to TWS / IB Gateway (or the simulator).

See docs/gateway.md for the design; ``python -m services.gateway --help`` to run it.
"""
