# ibfleet: Cython hot path, L2 order book.
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Table of contents for core/book.pyx. The .pyx keeps these banners in this order.

from libc.stdint cimport int8_t, int32_t, uint8_t


# -- CONSTANTS ----------------------------------------------------------------

cdef enum BookSide:
    SIDE_ASK = 0          # IB convention: side 0 is the ask
    SIDE_BID = 1          # IB convention: side 1 is the bid

cdef enum DepthOperation:
    OP_INSERT = 0
    OP_UPDATE = 1
    OP_DELETE = 2

cdef enum BookStatus:
    BOOK_OK = 0
    BOOK_ERR_SIDE = 1         # side is neither 0 (ask) nor 1 (bid)
    BOOK_ERR_OPERATION = 2    # operation is not 0/1/2
    BOOK_ERR_POSITION = 3     # position < 0 or >= depth
    BOOK_ERR_PRICE = 4        # price is NaN or infinite
    BOOK_ERR_SIZE = 5         # size is negative, NaN or infinite
    BOOK_ERR_GAP = 6          # position beyond the current row count for this operation
    BOOK_ERR_LENGTH = 7       # snapshot longer than depth


ctypedef struct Level:
    double price
    double size


# Packed batch record: 24 bytes, native byte order, struct format "=ibbxxdd".
ctypedef struct DepthRecord:
    int32_t position
    int8_t operation
    int8_t side
    uint8_t pad0
    uint8_t pad1
    double price
    double size


cdef class OrderBook:
    cdef readonly int depth
    """Maximum rows per side, fixed at construction."""
    cdef readonly int bid_count
    """Rows currently held on the bid side (0..depth)."""
    cdef readonly int ask_count
    """Rows currently held on the ask side (0..depth)."""
    cdef readonly bint stale
    """True after a rejected update, until apply_snapshot() or reset()."""
    cdef readonly int stale_reason
    """BookStatus code of the latest rejection since the last snapshot/reset (0 if none)."""
    cdef readonly long long instrument_id
    """Caller's instrument key (e.g. IB conId); not interpreted by the book."""
    cdef Level* _bids
    """Bid rows, best first; one allocation holds both sides."""
    cdef Level* _asks
    """Ask rows, best first; points into the same allocation as _bids."""

    # -- COMMANDS (C path: return a BookStatus, mark the book stale on error) --
    cdef int apply_depth(self, int position, int operation, int side, double price, double size) noexcept nogil
    cdef int apply_level(self, int side, double price, double size) noexcept nogil
    cdef int apply_top_side(self, int side, double price, double size) noexcept nogil
    cdef int apply_top(self, double bid_price, double bid_size, double ask_price, double ask_size) noexcept nogil
    cdef int apply_snapshot_c(self, const Level* bids, int n_bids, const Level* asks, int n_asks) noexcept nogil
    cdef Py_ssize_t apply_records(self, const unsigned char* data, Py_ssize_t n_records, int* status) noexcept nogil
    cdef void clear(self) noexcept nogil
    cdef int _reject(self, int status) noexcept nogil

    # -- QUERIES (C path and Python; NaN when undefined) --
    cpdef double best_bid_price(self) noexcept nogil
    cpdef double best_bid_size(self) noexcept nogil
    cpdef double best_ask_price(self) noexcept nogil
    cpdef double best_ask_size(self) noexcept nogil
    cpdef double level_price(self, int side, int position) noexcept nogil
    cpdef double level_size(self, int side, int position) noexcept nogil
    cpdef double mid(self) noexcept nogil
    cpdef double spread(self) noexcept nogil
    cpdef double microprice(self) noexcept nogil
    cpdef double imbalance(self, int levels=*) noexcept nogil
    cpdef double size_imbalance(self, int levels=*) noexcept nogil
    cpdef double avg_fill_price(self, bint buy, double quantity) noexcept nogil
    cpdef double size_within_ticks(self, int side, int ticks, double tick_size) noexcept nogil
    cdef bint is_crossed(self) noexcept nogil
    cdef bint is_locked(self) noexcept nogil
