# ibfleet: Cython hot path, streaming signals.
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Table of contents for core/signals.pyx. The .pyx keeps these banners in this order.

from core.book cimport OrderBook


# -- WINDOW STATE ---------------------------------------------------------------

ctypedef struct WelfordWindow:
    double* buf                  # ring of the last `window` inputs
    Py_ssize_t window
    Py_ssize_t count             # inputs held, <= window
    Py_ssize_t head              # next slot to overwrite once full
    Py_ssize_t since_recompute   # slides since the last exact recompute
    double mean
    double m2                    # sum of squared deviations from mean

ctypedef struct SumWindow:
    double* buf
    Py_ssize_t window
    Py_ssize_t count
    Py_ssize_t head
    Py_ssize_t since_recompute
    double total


# -- INDICATORS -------------------------------------------------------------------

cdef class EMA:
    cdef readonly double alpha
    """Smoothing factor in (0, 1]."""
    cdef readonly Py_ssize_t min_periods
    """Inputs needed before value stops being NaN."""
    cdef readonly long long count
    """Finite inputs seen since construction/reset."""
    cdef readonly long long skipped
    """Non-finite inputs ignored."""
    cdef readonly double value
    """Current output (NaN while warming up)."""
    cdef double _state

    # -- COMMANDS --
    cpdef double update(self, double x) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class RollingMean:
    cdef readonly Py_ssize_t window
    """Number of inputs averaged."""
    cdef readonly long long skipped
    """Non-finite inputs ignored."""
    cdef readonly double value
    """Current output (NaN until the window is full)."""
    cdef WelfordWindow _w

    # -- COMMANDS --
    cpdef double update(self, double x) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class RollingStd:
    cdef readonly Py_ssize_t window
    """Number of inputs in the window."""
    cdef readonly int ddof
    """Delta degrees of freedom (1 = sample standard deviation)."""
    cdef readonly long long skipped
    """Non-finite inputs ignored."""
    cdef readonly double value
    """Current output (NaN until the window is full)."""
    cdef WelfordWindow _w

    # -- COMMANDS --
    cpdef double update(self, double x) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class ZScore:
    cdef readonly Py_ssize_t window
    """Number of inputs in the window (the newest input included)."""
    cdef readonly int ddof
    """Delta degrees of freedom of the standard deviation."""
    cdef readonly long long skipped
    """Non-finite inputs ignored."""
    cdef readonly double value
    """Current output (NaN until the window is full or while std is 0)."""
    cdef WelfordWindow _w

    # -- COMMANDS --
    cpdef double update(self, double x) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class VWAP:
    cdef readonly Py_ssize_t window
    """0 for a session VWAP, else the number of trades in the rolling window."""
    cdef readonly long long skipped
    """Trades ignored (non-finite price, negative/non-finite volume)."""
    cdef readonly double value
    """Current output (NaN while no volume, or until a rolling window is full)."""
    cdef double _pv
    cdef double _v
    cdef SumWindow _wpv
    cdef SumWindow _wv

    # -- COMMANDS --
    cpdef double update(self, double price, double volume) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class RealizedVolatility:
    cdef readonly Py_ssize_t window
    """Number of log returns in the window."""
    cdef readonly double periods_per_year
    """Annualisation factor; 1.0 gives the per-period RMS log return."""
    cdef readonly long long skipped
    """Prices ignored (non-finite or <= 0)."""
    cdef readonly double value
    """Current output (NaN until `window` returns, i.e. window + 1 prices)."""
    cdef double _prev
    cdef SumWindow _w

    # -- COMMANDS --
    cpdef double update(self, double price) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class Imbalance:
    cdef readonly long long skipped
    """Inputs ignored (negative or non-finite sizes)."""
    cdef readonly double value
    """Latest (B - A) / (B + A); NaN before the first input or when B + A == 0."""

    # -- COMMANDS --
    cpdef double update(self, double bid_size, double ask_size) noexcept nogil
    cpdef double update_book(self, OrderBook book, int levels=*) noexcept nogil
    cpdef void reset(self) noexcept nogil


cdef class Microprice:
    cdef readonly long long skipped
    """Inputs ignored (non-finite prices, negative or non-finite sizes)."""
    cdef readonly double value
    """Latest microprice; NaN before the first input or when both sizes are 0."""

    # -- COMMANDS --
    cpdef double update(self, double bid_price, double bid_size, double ask_price, double ask_size) noexcept nogil
    cpdef double update_book(self, OrderBook book) noexcept nogil
    cpdef void reset(self) noexcept nogil
