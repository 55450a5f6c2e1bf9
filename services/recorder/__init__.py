"""The recorder: every bus frame, as received, into checksummed append-only segment files.

Modules, one job each:

- ``format``   the on-disk layout (file header, record, index entry) as pure pack/parse code;
- ``headers``  a cheap look at a frame's message headers (source, first/last sequence numbers);
- ``segment``  one segment file: buffered appends, flush and fsync, with an injectable file layer;
- ``index``    the time index written alongside each segment, and its rebuild;
- ``writer``   a recording directory: segment numbering, rotation by size and time;
- ``reader``   iterate a recording in order, by time and topic, verifying checksums;
- ``check``    completeness of a recording from the per-source sequence numbers;
- ``service``  the bus service (``ibfleet record``).

The file format is documented in docs/recording.md.
"""
