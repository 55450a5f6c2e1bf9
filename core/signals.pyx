# ibfleet: Cython hot path, streaming signals.
# SPDX-License-Identifier: GPL-3.0-or-later
"""Streaming indicators: O(1) (amortised) per update, no allocation after construction.

Every indicator has

* ``update(...)``: a ``cpdef`` scalar entry point (callable from Python, or
  from Cython without the GIL) that returns the current value;
* ``update_batch(..., out)``: typed-memoryview inputs (``double[:]``, e.g. an
  ``array('d')``) and a caller-provided ``double[:]`` output at least as long,
  filled with the value after each input; returns the number of inputs;
* ``reset()``: back to the just-constructed state;
* ``value``: the latest output.

Warm-up: rolling indicators return NaN until their window is full; EMA
returns NaN until ``min_periods`` inputs (default 1: seeded with the first
input). Non-finite or out-of-domain inputs are skipped: the state is
unchanged, ``skipped`` is incremented and the current value is returned again.

Numerics: rolling mean/variance use Welford's update for a sliding window
(add the new input, remove the oldest) and recompute exactly from the ring
buffer once every ``window`` slides, so drift cannot accumulate; that
recompute makes the cost O(1) amortised (O(window) on one update in
``window``). Rolling sums (VWAP, realized volatility) use the same scheme.
Because the state is exact at most ``window`` slides ago, rounding error is
bounded by the inputs of the last ``2 * window`` updates: with ``M`` the
largest ``|x|`` among them, the variance stays within ``1e-12 * M**2`` and the
mean within ``1e-12 * window * M`` of an exact two-pass computation (the tests
check these bounds against tests/core/reference.py). So a spike inflates the
error of a tiny variance only until it is two windows old.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY, NAN, fabs, log, sqrt

from core.book cimport OrderBook


# -- WINDOW STATE ---------------------------------------------------------------

cdef inline bint _finite(double x) noexcept nogil:
    return fabs(x) < INFINITY


cdef inline bint _size_ok(double x) noexcept nogil:
    return x >= 0.0 and x < INFINITY


cdef double* _alloc(Py_ssize_t window) except NULL:
    cdef double* buf
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    buf = <double*>PyMem_Malloc(window * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    return buf


cdef inline void _ww_clear(WelfordWindow* w) noexcept nogil:
    w.count = 0
    w.head = 0
    w.since_recompute = 0
    w.mean = 0.0
    w.m2 = 0.0


cdef void _ww_recompute(WelfordWindow* w) noexcept nogil:
    cdef Py_ssize_t i
    cdef double s = 0.0, d, m2 = 0.0, mean
    for i in range(w.count):
        s += w.buf[i]
    mean = s / w.count
    for i in range(w.count):
        d = w.buf[i] - mean
        m2 += d * d
    w.mean = mean
    w.m2 = m2
    w.since_recompute = 0


cdef inline void _ww_push(WelfordWindow* w, double x) noexcept nogil:
    cdef double y, old_mean, delta
    if w.count < w.window:
        w.buf[w.count] = x
        w.count += 1
        delta = x - w.mean
        w.mean += delta / w.count
        w.m2 += delta * (x - w.mean)
        return
    y = w.buf[w.head]
    w.buf[w.head] = x
    w.head += 1
    if w.head == w.window:
        w.head = 0
    w.since_recompute += 1
    if w.since_recompute >= w.window:
        _ww_recompute(w)
        return
    old_mean = w.mean
    w.mean = old_mean + (x - y) / w.window
    w.m2 += (x - y) * ((x - w.mean) + (y - old_mean))
    if w.m2 < 0.0:
        w.m2 = 0.0


cdef inline void _sw_clear(SumWindow* w) noexcept nogil:
    w.count = 0
    w.head = 0
    w.since_recompute = 0
    w.total = 0.0


cdef inline void _sw_push(SumWindow* w, double x) noexcept nogil:
    cdef double y, s
    cdef Py_ssize_t i
    if w.count < w.window:
        w.buf[w.count] = x
        w.count += 1
        w.total += x
        return
    y = w.buf[w.head]
    w.buf[w.head] = x
    w.head += 1
    if w.head == w.window:
        w.head = 0
    w.since_recompute += 1
    if w.since_recompute >= w.window:
        s = 0.0
        for i in range(w.window):
            s += w.buf[i]
        w.total = s
        w.since_recompute = 0
    else:
        w.total += x - y


cdef inline void _check_out(Py_ssize_t n, Py_ssize_t n_out) except *:
    if n_out < n:
        raise ValueError(f"out has {n_out} slots for {n} inputs")


cdef inline void _check_same(Py_ssize_t a, Py_ssize_t b) except *:
    if a != b:
        raise ValueError(f"input lengths differ: {a} != {b}")


# -- INDICATORS -------------------------------------------------------------------

@cython.final
cdef class EMA:
    """Exponential moving average ``s += alpha * (x - s)``, seeded with the first input.

    Give exactly one of ``alpha`` (0 < alpha <= 1) or ``span`` (alpha = 2 / (span + 1)).
    ``value`` is NaN until ``min_periods`` inputs have been seen.
    """

    def __cinit__(self, alpha=None, span=None, Py_ssize_t min_periods=1):
        if (alpha is None) == (span is None):
            raise ValueError("give exactly one of alpha or span")
        if span is not None:
            if span < 1:
                raise ValueError(f"span must be >= 1, got {span}")
            alpha = 2.0 / (span + 1.0)
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if min_periods < 1:
            raise ValueError(f"min_periods must be >= 1, got {min_periods}")
        self.alpha = alpha
        self.min_periods = min_periods
        self.reset()

    # -- COMMANDS --

    cpdef double update(self, double x) noexcept nogil:
        """Add one input; return the current value."""
        if not _finite(x):
            self.skipped += 1
            return self.value
        self.count += 1
        if self.count == 1:
            self._state = x
        else:
            self._state += self.alpha * (x - self._state)
        self.value = self._state if self.count >= self.min_periods else NAN
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all inputs."""
        self.count = 0
        self.skipped = 0
        self._state = NAN
        self.value = NAN

    def update_batch(self, const double[:] x, double[:] out) -> int:
        """``out[i] = update(x[i])`` for every input; returns len(x)."""
        cdef Py_ssize_t i, n = x.shape[0]
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(x[i])
        return n


@cython.final
cdef class RollingMean:
    """Mean of the last ``window`` inputs; NaN until the window is full."""

    def __cinit__(self, Py_ssize_t window):
        self._w.buf = _alloc(window)
        self._w.window = window
        self.window = window
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._w.buf)

    # -- COMMANDS --

    cpdef double update(self, double x) noexcept nogil:
        """Add one input; return the current value."""
        if not _finite(x):
            self.skipped += 1
            return self.value
        _ww_push(&self._w, x)
        self.value = self._w.mean if self._w.count == self._w.window else NAN
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all inputs."""
        _ww_clear(&self._w)
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] x, double[:] out) -> int:
        """``out[i] = update(x[i])`` for every input; returns len(x)."""
        cdef Py_ssize_t i, n = x.shape[0]
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(x[i])
        return n


@cython.final
cdef class RollingStd:
    """Standard deviation of the last ``window`` inputs (``ddof`` 1 = sample); NaN until full."""

    def __cinit__(self, Py_ssize_t window, int ddof=1):
        if ddof < 0 or window <= ddof:
            raise ValueError(f"need window > ddof >= 0, got window={window}, ddof={ddof}")
        self._w.buf = _alloc(window)
        self._w.window = window
        self.window = window
        self.ddof = ddof
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._w.buf)

    # -- COMMANDS --

    cpdef double update(self, double x) noexcept nogil:
        """Add one input; return the current value."""
        if not _finite(x):
            self.skipped += 1
            return self.value
        _ww_push(&self._w, x)
        if self._w.count == self._w.window:
            self.value = sqrt(self._w.m2 / (self._w.window - self.ddof))
        else:
            self.value = NAN
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all inputs."""
        _ww_clear(&self._w)
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] x, double[:] out) -> int:
        """``out[i] = update(x[i])`` for every input; returns len(x)."""
        cdef Py_ssize_t i, n = x.shape[0]
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(x[i])
        return n


@cython.final
cdef class ZScore:
    """``(x - mean) / std`` of the newest input against the last ``window`` inputs (itself included).

    NaN until the window is full, and whenever the window's variance is 0.
    """

    def __cinit__(self, Py_ssize_t window, int ddof=1):
        if ddof < 0 or window <= ddof:
            raise ValueError(f"need window > ddof >= 0, got window={window}, ddof={ddof}")
        self._w.buf = _alloc(window)
        self._w.window = window
        self.window = window
        self.ddof = ddof
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._w.buf)

    # -- COMMANDS --

    cpdef double update(self, double x) noexcept nogil:
        """Add one input; return the current value."""
        cdef double var
        if not _finite(x):
            self.skipped += 1
            return self.value
        _ww_push(&self._w, x)
        self.value = NAN
        if self._w.count == self._w.window:
            var = self._w.m2 / (self._w.window - self.ddof)
            if var > 0.0:
                self.value = (x - self._w.mean) / sqrt(var)
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all inputs."""
        _ww_clear(&self._w)
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] x, double[:] out) -> int:
        """``out[i] = update(x[i])`` for every input; returns len(x)."""
        cdef Py_ssize_t i, n = x.shape[0]
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(x[i])
        return n


@cython.final
cdef class VWAP:
    """Volume-weighted average price: per session (``window=0``) or over the last ``window`` trades.

    Session: NaN until some volume has traded; ``reset()`` starts a new session.
    Rolling: NaN until ``window`` trades have been seen, or if they carry no volume.
    A trade with a non-finite price or a negative/non-finite volume is skipped.
    """

    def __cinit__(self, Py_ssize_t window=0):
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.window = window
        if window > 0:
            self._wpv.buf = _alloc(window)
            self._wv.buf = _alloc(window)
            self._wpv.window = window
            self._wv.window = window
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._wpv.buf)
        PyMem_Free(self._wv.buf)

    # -- COMMANDS --

    cpdef double update(self, double price, double volume) noexcept nogil:
        """Add one trade; return the current value."""
        if not _finite(price) or not _size_ok(volume):
            self.skipped += 1
            return self.value
        if self.window == 0:
            self._pv += price * volume
            self._v += volume
            self.value = self._pv / self._v if self._v > 0.0 else NAN
            return self.value
        _sw_push(&self._wpv, price * volume)
        _sw_push(&self._wv, volume)
        if self._wv.count == self.window and self._wv.total > 0.0:
            self.value = self._wpv.total / self._wv.total
        else:
            self.value = NAN
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all trades (start a new session)."""
        self._pv = 0.0
        self._v = 0.0
        _sw_clear(&self._wpv)
        _sw_clear(&self._wv)
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] prices, const double[:] volumes, double[:] out) -> int:
        """``out[i] = update(prices[i], volumes[i])``; returns the number of trades."""
        cdef Py_ssize_t i, n = prices.shape[0]
        _check_same(n, volumes.shape[0])
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(prices[i], volumes[i])
        return n


@cython.final
cdef class RealizedVolatility:
    """``sqrt(periods_per_year * mean(r**2))`` over the last ``window`` log returns ``r = ln(p_t / p_{t-1})``.

    Not demeaned (the usual realized-volatility convention). The first price
    only seeds the return; NaN until ``window`` returns have been seen. Prices
    that are not finite and positive are skipped.
    """

    def __cinit__(self, Py_ssize_t window, double periods_per_year=1.0):
        if not (periods_per_year > 0.0 and _finite(periods_per_year)):
            raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")
        self._w.buf = _alloc(window)
        self._w.window = window
        self.window = window
        self.periods_per_year = periods_per_year
        self.reset()

    def __dealloc__(self):
        PyMem_Free(self._w.buf)

    # -- COMMANDS --

    cpdef double update(self, double price) noexcept nogil:
        """Add one price; return the current value."""
        cdef double r
        if not (price > 0.0 and price < INFINITY):
            self.skipped += 1
            return self.value
        if self._prev != self._prev:  # NaN: no previous price yet
            self._prev = price
            return self.value
        r = log(price / self._prev)
        self._prev = price
        _sw_push(&self._w, r * r)
        if self._w.count == self.window:
            self.value = sqrt(self.periods_per_year * max(self._w.total, 0.0) / self.window)
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all prices."""
        _sw_clear(&self._w)
        self._prev = NAN
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] prices, double[:] out) -> int:
        """``out[i] = update(prices[i])`` for every price; returns len(prices)."""
        cdef Py_ssize_t i, n = prices.shape[0]
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(prices[i])
        return n


@cython.final
cdef class Imbalance:
    """Top-of-book size imbalance ``(B - A) / (B + A)`` in [-1, 1], or the book's depth-weighted one.

    NaN when no size is visible. Negative or non-finite sizes are skipped.
    """

    def __cinit__(self):
        self.reset()

    # -- COMMANDS --

    cpdef double update(self, double bid_size, double ask_size) noexcept nogil:
        """Add one (bid size, ask size) observation; return the current value."""
        if not _size_ok(bid_size) or not _size_ok(ask_size):
            self.skipped += 1
            return self.value
        if bid_size + ask_size > 0.0:
            self.value = (bid_size - ask_size) / (bid_size + ask_size)
        else:
            self.value = NAN
        return self.value

    cpdef double update_book(self, OrderBook book, int levels=1) noexcept nogil:
        """Take ``book.imbalance(levels)`` (see OrderBook.imbalance for the weights)."""
        self.value = book.imbalance(levels)
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all inputs."""
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] bid_sizes, const double[:] ask_sizes, double[:] out) -> int:
        """``out[i] = update(bid_sizes[i], ask_sizes[i])``; returns the number of inputs."""
        cdef Py_ssize_t i, n = bid_sizes.shape[0]
        _check_same(n, ask_sizes.shape[0])
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(bid_sizes[i], ask_sizes[i])
        return n


@cython.final
cdef class Microprice:
    """Size-weighted mid ``(bid * ask_size + ask * bid_size) / (bid_size + ask_size)``.

    NaN when both sizes are 0. Non-finite prices and negative/non-finite sizes are skipped.
    """

    def __cinit__(self):
        self.reset()

    # -- COMMANDS --

    cpdef double update(self, double bid_price, double bid_size, double ask_price, double ask_size) noexcept nogil:
        """Add one quote; return the current value."""
        if not (_finite(bid_price) and _finite(ask_price) and _size_ok(bid_size) and _size_ok(ask_size)):
            self.skipped += 1
            return self.value
        if bid_size + ask_size > 0.0:
            self.value = (bid_price * ask_size + ask_price * bid_size) / (bid_size + ask_size)
        else:
            self.value = NAN
        return self.value

    cpdef double update_book(self, OrderBook book) noexcept nogil:
        """Take ``book.microprice()`` (NaN if a side is empty)."""
        self.value = book.microprice()
        return self.value

    cpdef void reset(self) noexcept nogil:
        """Forget all inputs."""
        self.skipped = 0
        self.value = NAN

    def update_batch(self, const double[:] bid_prices, const double[:] bid_sizes,
                     const double[:] ask_prices, const double[:] ask_sizes, double[:] out) -> int:
        """``out[i] = update(bid_prices[i], bid_sizes[i], ask_prices[i], ask_sizes[i])``."""
        cdef Py_ssize_t i, n = bid_prices.shape[0]
        _check_same(n, bid_sizes.shape[0])
        _check_same(n, ask_prices.shape[0])
        _check_same(n, ask_sizes.shape[0])
        _check_out(n, out.shape[0])
        with nogil:
            for i in range(n):
                out[i] = self.update(bid_prices[i], bid_sizes[i], ask_prices[i], ask_sizes[i])
        return n
