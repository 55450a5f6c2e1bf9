"""Replay: a recording republished, verbatim, on a bus of its own.

- ``guard``   refuse a run directory where a live bus (or another replay) is running;
- ``outlet``  the XPUB that replaces the broker's ``bus-out``: waits for subscribers, never
              drops (``ZMQ_XPUB_NODROP``: a full subscriber pipe makes the replay wait);
- ``pacing``  real time, xN, or as fast as possible, from the recorded receive times;
- ``timespec`` parsing of ``--from`` / ``--to``;
- ``__main__`` ``ibfleet replay``.
"""
