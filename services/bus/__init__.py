"""The bus: ZeroMQ transport every ibfleet service uses.

- ``publisher`` / ``subscriber``: topic-prefixed PUB/SUB through the broker, with per-source
  sequence numbers stamped on send and gaps detected on receive. Market data and events.
- ``reliable``: DEALER/ROUTER request/acknowledge with resend and de-duplication. Orders.
- ``snapshot``: the Clone pattern's snapshot server and late-joiner client.
- ``broker``: the bus process (XSUB/XPUB proxy, last-value cache, snapshot service).
- ``heartbeat``: a watch on every service's heartbeat.
"""
