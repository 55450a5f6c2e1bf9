"""ibfleet hot path, compiled with Cython (build: ``setup.py build_ext --inplace``).

* ``core.book``: ``OrderBook``, a fixed-depth L2 book fed by IB position-based
  depth, price levels or top of book, with a packed batch path for replay.
* ``core.signals``: streaming indicators (EMA, rolling mean/std/z-score, VWAP,
  realized volatility, imbalance, microprice) with scalar and batch entry points.

The ``.pxd`` files are the table of contents, and let other Cython modules
``cimport`` the C (nogil) entry points. Submodules are not imported here, so
importing ``core`` works before the extensions are built.
"""
