"""The data catalog (``ibfleet data``): market data files imported into Parquet datasets by
kind, instrument and date, with instrument reference data and provenance. See docs/data.md.

One job per module: ``errors`` (DataError), ``times`` (zones, local times to ns UTC),
``model`` (the metadata, msgspec), ``source`` (reading one input file), ``tables`` (stored
schemas), ``lobster`` / ``csvtable`` / ``histdata`` (the formats), ``importers`` (KIND to
tables), ``catalog`` (the directory, atomic imports), ``sample`` (the shipped sample),
``cli``.
"""
