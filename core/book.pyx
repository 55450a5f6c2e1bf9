# ibfleet: Cython hot path, L2 order book.
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixed-depth L2 order book for one instrument.

Rows are C doubles (price, size) in one PyMem allocation made at construction:
IB sizes are ``Decimal`` in the API, but a double carries every realistic
size exactly enough for the hot path (integers up to 2**53, fractional crypto
sizes to ~15 significant digits).

Sides follow IB's convention everywhere in this module: ``0`` is the ask,
``1`` is the bid (``ASK`` / ``BID``).

Position-based depth (``updateMktDepth`` / ``updateMktDepthL2``), modelled
exactly as IB describes it:

* insert (0) at ``p``: requires ``p <= rows``; rows ``p..`` shift down one and,
  when the side is full, the last row falls off.
* update (1) at ``p``: requires ``p < rows``; overwrites row ``p``.
* delete (2) at ``p``: requires ``p < rows``; rows below shift up one.

IB sends positions in order, so an insert beyond the row count, or an
update/delete of a row that does not exist, means we lost a message: it is
rejected (``BOOK_ERR_GAP``) and the book is marked stale.

Every update is validated in this order before anything is written: side,
operation, position in ``0..depth-1``, price finite, size finite and >= 0,
then the gap rule. A rejected update leaves the rows untouched, raises
``BookError`` from the Python API (a status code from the C API) and sets
``stale`` until ``apply_snapshot()`` or ``reset()``. Updates keep being
applied to a stale book; the flag tells readers not to trust it. Price and
size are validated for deletes too although a delete does not use them.
Negative prices are allowed (spreads, some futures). The market maker of an
L2 row is not stored: the book aggregates rows by position only.

A book has no lock: one thread (or one event loop) owns it. The C entry
points run without the GIL, so a caller that releases it must not share the
book across threads.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY, NAN, fabs
from libc.string cimport memcpy, memmove, memset

import struct as _struct


# -- CONSTANTS ----------------------------------------------------------------

ASK = SIDE_ASK
BID = SIDE_BID
INSERT = OP_INSERT
UPDATE = OP_UPDATE
DELETE = OP_DELETE

OK = BOOK_OK
ERR_SIDE = BOOK_ERR_SIDE
ERR_OPERATION = BOOK_ERR_OPERATION
ERR_POSITION = BOOK_ERR_POSITION
ERR_PRICE = BOOK_ERR_PRICE
ERR_SIZE = BOOK_ERR_SIZE
ERR_GAP = BOOK_ERR_GAP
ERR_LENGTH = BOOK_ERR_LENGTH

#: struct-module format of one batch record (see DepthRecord in book.pxd).
RECORD_FORMAT = "=ibbxxdd"
#: Bytes per batch record.
RECORD_SIZE = sizeof(DepthRecord)
assert RECORD_SIZE == _struct.calcsize(RECORD_FORMAT) == 24, "DepthRecord layout changed"

_STATUS_TEXT = {
    BOOK_ERR_SIDE: "unknown side (IB: 0=ask, 1=bid)",
    BOOK_ERR_OPERATION: "unknown operation (IB: 0=insert, 1=update, 2=delete)",
    BOOK_ERR_POSITION: "position outside the book's depth",
    BOOK_ERR_PRICE: "price is NaN or infinite",
    BOOK_ERR_SIZE: "size is negative, NaN or infinite",
    BOOK_ERR_GAP: "position beyond the current row count (lost message?)",
    BOOK_ERR_LENGTH: "more rows than the book's depth",
}


class BookError(ValueError):
    """A rejected book update. ``status`` holds the BookStatus code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def status_text(int status) -> str:
    """Human-readable meaning of a BookStatus code."""
    if status == BOOK_OK:
        return "ok"
    return _STATUS_TEXT.get(status, f"unknown status {status}")


def pack_records(records) -> bytes:
    """Pack ``(position, operation, side, price, size)`` tuples into a batch buffer."""
    pack = _struct.Struct(RECORD_FORMAT).pack
    return b"".join([pack(p, o, s, px, sz) for (p, o, s, px, sz) in records])


cdef inline bint _price_ok(double price) noexcept nogil:
    return fabs(price) < INFINITY  # False for NaN and +-inf


cdef inline bint _size_ok(double size) noexcept nogil:
    return size >= 0.0 and size < INFINITY  # False for NaN too


cdef object _error(int status, str where):
    return BookError(f"{where}: {status_text(status)}", status)


@cython.final
cdef class OrderBook:
    """L2 book with at most ``depth`` rows per side, best row first.

    Parameters
    ----------
    depth : int
        Maximum rows per side (IB serves 10 for most instruments; any value >= 1).
    instrument_id : int
        Opaque caller key, e.g. the IB conId.
    """

    def __cinit__(self, int depth=10, long long instrument_id=0):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.instrument_id = instrument_id
        self._bids = <Level*>PyMem_Malloc(2 * depth * sizeof(Level))
        if self._bids == NULL:
            raise MemoryError()
        self._asks = self._bids + depth
        memset(self._bids, 0, 2 * depth * sizeof(Level))

    def __dealloc__(self):
        PyMem_Free(self._bids)

    def __sizeof__(self) -> int:
        # Count the row storage so sys.getsizeof() reports the whole book.
        return object.__sizeof__(self) + 2 * self.depth * sizeof(Level)

    @property
    def nbytes(self) -> int:
        """Bytes of row storage allocated outside the Python object."""
        return 2 * self.depth * sizeof(Level)

    @property
    def crossed(self) -> bool:
        """Best bid above best ask. Reported, never corrected."""
        return self.is_crossed()

    @property
    def locked(self) -> bool:
        """Best bid equal to best ask."""
        return self.is_locked()

    def __repr__(self) -> str:
        return (
            f"OrderBook(depth={self.depth}, instrument_id={self.instrument_id}, "
            f"bids={self.bid_count}, asks={self.ask_count}, stale={self.stale})"
        )

    # -- COMMANDS (C path: return a BookStatus, mark the book stale on error) --

    cdef int apply_depth(self, int position, int operation, int side, double price, double size) noexcept nogil:
        cdef Level* rows
        cdef int n, moved
        if side == SIDE_BID:
            rows = self._bids
            n = self.bid_count
        elif side == SIDE_ASK:
            rows = self._asks
            n = self.ask_count
        else:
            return self._reject(BOOK_ERR_SIDE)
        if operation < OP_INSERT or operation > OP_DELETE:
            return self._reject(BOOK_ERR_OPERATION)
        if position < 0 or position >= self.depth:
            return self._reject(BOOK_ERR_POSITION)
        if not _price_ok(price):
            return self._reject(BOOK_ERR_PRICE)
        if not _size_ok(size):
            return self._reject(BOOK_ERR_SIZE)

        if operation == OP_UPDATE:
            if position >= n:
                return self._reject(BOOK_ERR_GAP)
            rows[position].price = price
            rows[position].size = size
            return BOOK_OK
        if operation == OP_INSERT:
            if position > n:
                return self._reject(BOOK_ERR_GAP)
            # A full side drops its last row to make room.
            moved = (n if n < self.depth else self.depth - 1) - position
            if moved > 0:
                memmove(rows + position + 1, rows + position, moved * sizeof(Level))
            rows[position].price = price
            rows[position].size = size
            n = n + 1 if n < self.depth else n
        else:  # OP_DELETE
            if position >= n:
                return self._reject(BOOK_ERR_GAP)
            moved = n - position - 1
            if moved > 0:
                memmove(rows + position, rows + position + 1, moved * sizeof(Level))
            n -= 1
            rows[n].price = 0.0
            rows[n].size = 0.0
        if side == SIDE_BID:
            self.bid_count = n
        else:
            self.ask_count = n
        return BOOK_OK

    cdef int apply_level(self, int side, double price, double size) noexcept nogil:
        cdef Level* rows
        cdef int n, i, moved
        if side == SIDE_BID:
            rows = self._bids
            n = self.bid_count
        elif side == SIDE_ASK:
            rows = self._asks
            n = self.ask_count
        else:
            return self._reject(BOOK_ERR_SIDE)
        if not _price_ok(price):
            return self._reject(BOOK_ERR_PRICE)
        if not _size_ok(size):
            return self._reject(BOOK_ERR_SIZE)

        # First row at or behind `price` in this side's order (bids high to low).
        i = 0
        if side == SIDE_BID:
            while i < n and rows[i].price > price:
                i += 1
        else:
            while i < n and rows[i].price < price:
                i += 1

        if i < n and rows[i].price == price:
            if size > 0.0:
                rows[i].size = size
                return BOOK_OK
            moved = n - i - 1
            if moved > 0:
                memmove(rows + i, rows + i + 1, moved * sizeof(Level))
            n -= 1
            rows[n].price = 0.0
            rows[n].size = 0.0
        elif size == 0.0 or i >= self.depth:
            # Removing an absent level, or a level behind a full book: nothing to hold.
            return BOOK_OK
        else:
            moved = (n if n < self.depth else self.depth - 1) - i
            if moved > 0:
                memmove(rows + i + 1, rows + i, moved * sizeof(Level))
            rows[i].price = price
            rows[i].size = size
            n = n + 1 if n < self.depth else n
        if side == SIDE_BID:
            self.bid_count = n
        else:
            self.ask_count = n
        return BOOK_OK

    cdef int apply_top_side(self, int side, double price, double size) noexcept nogil:
        cdef Level* rows
        if side != SIDE_BID and side != SIDE_ASK:
            return self._reject(BOOK_ERR_SIDE)
        if not _price_ok(price):
            return self._reject(BOOK_ERR_PRICE)
        if not _size_ok(size):
            return self._reject(BOOK_ERR_SIZE)
        rows = self._bids if side == SIDE_BID else self._asks
        # A top-of-book feed knows one row; anything deeper would be stale.
        memset(rows, 0, self.depth * sizeof(Level))
        if size > 0.0:
            rows[0].price = price
            rows[0].size = size
        if side == SIDE_BID:
            self.bid_count = 1 if size > 0.0 else 0
        else:
            self.ask_count = 1 if size > 0.0 else 0
        return BOOK_OK

    cdef int apply_top(self, double bid_price, double bid_size, double ask_price, double ask_size) noexcept nogil:
        # Validate both sides first so a bad ask cannot leave a half-applied quote.
        if not _price_ok(bid_price) or not _price_ok(ask_price):
            return self._reject(BOOK_ERR_PRICE)
        if not _size_ok(bid_size) or not _size_ok(ask_size):
            return self._reject(BOOK_ERR_SIZE)
        self.apply_top_side(SIDE_BID, bid_price, bid_size)
        self.apply_top_side(SIDE_ASK, ask_price, ask_size)
        return BOOK_OK

    cdef int apply_snapshot_c(self, const Level* bids, int n_bids, const Level* asks, int n_asks) noexcept nogil:
        cdef int i
        if n_bids < 0 or n_asks < 0 or n_bids > self.depth or n_asks > self.depth:
            return self._reject(BOOK_ERR_LENGTH)
        for i in range(n_bids):
            if not _price_ok(bids[i].price):
                return self._reject(BOOK_ERR_PRICE)
            if not _size_ok(bids[i].size):
                return self._reject(BOOK_ERR_SIZE)
        for i in range(n_asks):
            if not _price_ok(asks[i].price):
                return self._reject(BOOK_ERR_PRICE)
            if not _size_ok(asks[i].size):
                return self._reject(BOOK_ERR_SIZE)
        self.clear()
        if n_bids > 0:
            memcpy(self._bids, bids, n_bids * sizeof(Level))
        if n_asks > 0:
            memcpy(self._asks, asks, n_asks * sizeof(Level))
        self.bid_count = n_bids
        self.ask_count = n_asks
        return BOOK_OK

    cdef Py_ssize_t apply_records(self, const unsigned char* data, Py_ssize_t n_records, int* status) noexcept nogil:
        cdef Py_ssize_t i
        cdef DepthRecord rec
        cdef int st
        for i in range(n_records):
            # memcpy: the caller's buffer need not be 8-byte aligned.
            memcpy(&rec, data + i * sizeof(DepthRecord), sizeof(DepthRecord))
            st = self.apply_depth(rec.position, rec.operation, rec.side, rec.price, rec.size)
            if st != BOOK_OK:
                status[0] = st
                return i
        status[0] = BOOK_OK
        return n_records

    cdef void clear(self) noexcept nogil:
        memset(self._bids, 0, 2 * self.depth * sizeof(Level))
        self.bid_count = 0
        self.ask_count = 0
        self.stale = False
        self.stale_reason = BOOK_OK

    cdef int _reject(self, int status) noexcept nogil:
        self.stale = True
        self.stale_reason = status
        return status

    # Python entry points for the commands above: thin wrappers, one C call each.

    def update_depth(self, int position, int operation, int side, double price, double size) -> None:
        """Apply one IB position-based depth row (updateMktDepth / updateMktDepthL2).

        Raises BookError (and marks the book stale) if the update is rejected.
        """
        cdef int st = self.apply_depth(position, operation, side, price, size)
        if st != BOOK_OK:
            raise _error(st, f"update_depth(position={position}, operation={operation}, "
                             f"side={side}, price={price!r}, size={size!r})")

    def update_level(self, int side, double price, double size) -> None:
        """Set the size at ``price`` on ``side``; size 0 removes the level.

        Prices are matched exactly, so feed values already on the tick grid.
        A new level behind a full side is ignored; a new level inside a full
        side pushes the last row out.
        """
        cdef int st = self.apply_level(side, price, size)
        if st != BOOK_OK:
            raise _error(st, f"update_level(side={side}, price={price!r}, size={size!r})")

    def update_bid(self, double price, double size) -> None:
        """Top-of-book bid (reqMktData ticks): the bid side becomes this one row (none if size is 0)."""
        cdef int st = self.apply_top_side(SIDE_BID, price, size)
        if st != BOOK_OK:
            raise _error(st, f"update_bid(price={price!r}, size={size!r})")

    def update_ask(self, double price, double size) -> None:
        """Top-of-book ask (reqMktData ticks): the ask side becomes this one row (none if size is 0)."""
        cdef int st = self.apply_top_side(SIDE_ASK, price, size)
        if st != BOOK_OK:
            raise _error(st, f"update_ask(price={price!r}, size={size!r})")

    def update_top(self, double bid_price, double bid_size, double ask_price, double ask_size) -> None:
        """Top-of-book quote (tick-by-tick BidAsk): both sides at once, all or nothing."""
        cdef int st = self.apply_top(bid_price, bid_size, ask_price, ask_size)
        if st != BOOK_OK:
            raise _error(st, f"update_top(bid_price={bid_price!r}, bid_size={bid_size!r}, "
                             f"ask_price={ask_price!r}, ask_size={ask_size!r})")

    def apply_snapshot(self, bids=(), asks=()) -> None:
        """Replace both sides with ``(price, size)`` rows, best first, and clear ``stale``.

        Rows are taken as given (no sorting, crossed rows kept). A bad snapshot
        raises BookError, leaves the rows untouched and marks the book stale.
        """
        cdef list b = [(float(p), float(s)) for p, s in bids]
        cdef list a = [(float(p), float(s)) for p, s in asks]
        cdef int nb = len(b), na = len(a), i, st
        if nb > self.depth or na > self.depth:
            st = self._reject(BOOK_ERR_LENGTH)
            raise _error(st, f"apply_snapshot({nb} bids, {na} asks, depth {self.depth})")
        cdef Level* tmp = <Level*>PyMem_Malloc((nb + na + 1) * sizeof(Level))
        if tmp == NULL:
            raise MemoryError()
        try:
            for i in range(nb):
                tmp[i].price, tmp[i].size = b[i]
            for i in range(na):
                tmp[nb + i].price, tmp[nb + i].size = a[i]
            st = self.apply_snapshot_c(tmp, nb, tmp + nb, na)
        finally:
            PyMem_Free(tmp)
        if st != BOOK_OK:
            raise _error(st, "apply_snapshot")

    def apply_batch(self, buffer) -> int:
        """Apply packed depth records (``RECORD_FORMAT``, ``RECORD_SIZE`` bytes each) in order.

        Returns the number of records applied. If that is less than the number
        of records, the record at that index was rejected and not applied, no
        later record was applied, the book is stale and ``stale_reason`` says
        why. No exception is raised for a
        bad record; a buffer whose length is not a multiple of RECORD_SIZE
        raises BookError before anything is applied.
        """
        cdef const unsigned char[::1] data = memoryview(buffer).cast("B")
        cdef Py_ssize_t nbytes = data.shape[0]
        cdef Py_ssize_t n, done
        cdef int st = BOOK_OK
        if nbytes % sizeof(DepthRecord) != 0:
            raise BookError(
                f"apply_batch: buffer of {nbytes} bytes is not a whole number of "
                f"{sizeof(DepthRecord)}-byte records", BOOK_ERR_LENGTH)
        n = nbytes // sizeof(DepthRecord)
        if n == 0:
            return 0
        with nogil:
            done = self.apply_records(&data[0], n, &st)
        return done

    def reset(self) -> None:
        """Empty both sides and clear ``stale``."""
        self.clear()

    # -- QUERIES (C path and Python; NaN when undefined) --

    cpdef double best_bid_price(self) noexcept nogil:
        """Best bid price, NaN if there is no bid."""
        return self._bids[0].price if self.bid_count > 0 else NAN

    cpdef double best_bid_size(self) noexcept nogil:
        """Size at the best bid, NaN if there is no bid."""
        return self._bids[0].size if self.bid_count > 0 else NAN

    cpdef double best_ask_price(self) noexcept nogil:
        """Best ask price, NaN if there is no ask."""
        return self._asks[0].price if self.ask_count > 0 else NAN

    cpdef double best_ask_size(self) noexcept nogil:
        """Size at the best ask, NaN if there is no ask."""
        return self._asks[0].size if self.ask_count > 0 else NAN

    cpdef double level_price(self, int side, int position) noexcept nogil:
        """Price of row ``position`` on ``side``, NaN if that row does not exist."""
        if side == SIDE_BID and 0 <= position < self.bid_count:
            return self._bids[position].price
        if side == SIDE_ASK and 0 <= position < self.ask_count:
            return self._asks[position].price
        return NAN

    cpdef double level_size(self, int side, int position) noexcept nogil:
        """Size of row ``position`` on ``side``, NaN if that row does not exist."""
        if side == SIDE_BID and 0 <= position < self.bid_count:
            return self._bids[position].size
        if side == SIDE_ASK and 0 <= position < self.ask_count:
            return self._asks[position].size
        return NAN

    cpdef double mid(self) noexcept nogil:
        """(best bid + best ask) / 2, NaN unless both sides have a row."""
        if self.bid_count == 0 or self.ask_count == 0:
            return NAN
        return (self._bids[0].price + self._asks[0].price) * 0.5

    cpdef double spread(self) noexcept nogil:
        """best ask - best bid (negative when crossed), NaN unless both sides have a row."""
        if self.bid_count == 0 or self.ask_count == 0:
            return NAN
        return self._asks[0].price - self._bids[0].price

    cpdef double microprice(self) noexcept nogil:
        """Size-weighted mid: (bid*ask_size + ask*bid_size) / (bid_size + ask_size).

        NaN unless both sides have a row and the two top sizes are not both zero.
        """
        cdef double bs, a_s
        if self.bid_count == 0 or self.ask_count == 0:
            return NAN
        bs = self._bids[0].size
        a_s = self._asks[0].size
        if bs + a_s == 0.0:
            return NAN
        return (self._bids[0].price * a_s + self._asks[0].price * bs) / (bs + a_s)

    cpdef double imbalance(self, int levels=1) noexcept nogil:
        """Depth-weighted imbalance (B - A) / (B + A) over the top ``levels`` rows.

        Row i (0 = best) has weight ``levels - i``, so the top row counts most
        and weights fall linearly. Result in [-1, 1]; NaN if ``levels < 1`` or
        no size is visible.
        """
        cdef double b = 0.0, a = 0.0
        cdef int i
        if levels < 1:
            return NAN
        for i in range(min(levels, self.bid_count)):
            b += (levels - i) * self._bids[i].size
        for i in range(min(levels, self.ask_count)):
            a += (levels - i) * self._asks[i].size
        if b + a == 0.0:
            return NAN
        return (b - a) / (b + a)

    cpdef double size_imbalance(self, int levels=5) noexcept nogil:
        """Plain size imbalance (B - A) / (B + A), B and A the sizes summed over the top
        ``levels`` rows of each side (no weights). Result in [-1, 1]; NaN if
        ``levels < 1`` or no size is visible.
        """
        cdef double b = 0.0, a = 0.0
        cdef int i
        if levels < 1:
            return NAN
        for i in range(min(levels, self.bid_count)):
            b += self._bids[i].size
        for i in range(min(levels, self.ask_count)):
            a += self._asks[i].size
        if b + a == 0.0:
            return NAN
        return (b - a) / (b + a)

    cpdef double avg_fill_price(self, bint buy, double quantity) noexcept nogil:
        """Average price to fill ``quantity`` by walking the book (a buy walks the asks).

        NaN if ``quantity`` is not positive and finite, or the visible rows
        cannot fill all of it.
        """
        cdef const Level* rows = self._asks if buy else self._bids
        cdef int n = self.ask_count if buy else self.bid_count
        cdef double left = quantity, notional = 0.0, take
        cdef int i
        if not (quantity > 0.0 and quantity < INFINITY):
            return NAN
        for i in range(n):
            take = rows[i].size if rows[i].size < left else left
            notional += take * rows[i].price
            left -= take
            if left <= 0.0:
                return notional / quantity
        return NAN

    cpdef double size_within_ticks(self, int side, int ticks, double tick_size) noexcept nogil:
        """Total size on ``side`` priced within ``ticks`` ticks of that side's best price.

        Inclusive, with half a tick of slack so float grid error cannot drop a
        row. 0.0 for an empty side; NaN for a bad side, ``ticks < 0`` or a
        non-positive/non-finite ``tick_size``.
        """
        cdef const Level* rows
        cdef int n, i
        cdef double limit, total = 0.0
        if ticks < 0 or not (tick_size > 0.0 and tick_size < INFINITY):
            return NAN
        if side == SIDE_BID:
            rows = self._bids
            n = self.bid_count
            if n == 0:
                return 0.0
            limit = rows[0].price - (ticks + 0.5) * tick_size
            for i in range(n):
                if rows[i].price >= limit:
                    total += rows[i].size
        elif side == SIDE_ASK:
            rows = self._asks
            n = self.ask_count
            if n == 0:
                return 0.0
            limit = rows[0].price + (ticks + 0.5) * tick_size
            for i in range(n):
                if rows[i].price <= limit:
                    total += rows[i].size
        else:
            return NAN
        return total

    cdef bint is_crossed(self) noexcept nogil:
        return self.bid_count > 0 and self.ask_count > 0 and self._bids[0].price > self._asks[0].price

    cdef bint is_locked(self) noexcept nogil:
        return self.bid_count > 0 and self.ask_count > 0 and self._bids[0].price == self._asks[0].price

    def bids(self) -> list:
        """Bid rows as ``[(price, size), ...]``, best first."""
        return [(self._bids[i].price, self._bids[i].size) for i in range(self.bid_count)]

    def asks(self) -> list:
        """Ask rows as ``[(price, size), ...]``, best first."""
        return [(self._asks[i].price, self._asks[i].size) for i in range(self.ask_count)]
