# ibfleet: Cython hot path, backtest replay of depth updates.
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Two pieces for services/backtest/fast_depth.py:
#   scan()       walks a recording segment's records (the layout of services/recorder/format.py,
#                CRC checked as the reader does) and decodes frames made only of DepthUpdate
#                messages (proto.codec's msgpack, array-like, tagged) straight into columns;
#                it stops at anything else, which the caller hands to the general path.
#   DepthLoop    runs a batch of those updates through a started BacktestEngine exactly as
#                BacktestEngine.run / _market and Strategy.handle_depth do, one update at a time,
#                calling the strategy's on_depth(symbol, book) for each, and running the
#                engine's scheduled events when they are due.

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from libc.math cimport isfinite

from core.book cimport OrderBook

cdef extern from "crc32_fold.h":
    uint32_t ibf_crc32(const unsigned char* p, size_t n) nogil  # zlib's CRC-32, folded on x86

# scan() results
SCAN_END = 0        # reached the end of the buffer (or a torn tail: see pos)
SCAN_FULL = 1       # the batch is full; resume at pos
SCAN_OTHER = 2      # the record at pos is not a depth-only frame: decode it the general way
SCAN_DAMAGED = 3    # the record at pos does not parse or its CRC fails: the general reader
SCAN_PAST = 4       # the record at pos is after end_ns

cdef enum:
    HEAD_SIZE = 58   # services/recorder/format.py RECORD_HEAD
    CRC_SIZE = 4
    MAX_BODY = 256 * 1024 * 1024
    N_FIELDS = 14    # DepthUpdate: tag, v, src, seq, tseq, ts, symbol, position, operation,
                     # side, price, size, market_maker, smart_depth

cdef const unsigned char* TAG = b"DepthUpdate"
cdef const unsigned char* MARKER = b"\xb5RC\x01"


cdef class DepthBatch:
    """Columns of decoded depth updates (our symbols only), in recording order."""
    cdef public Py_ssize_t n
    cdef public Py_ssize_t cap
    cdef public Py_ssize_t records    # records walked by scan() since the last reset
    cdef int64_t* recv_ns
    cdef int32_t* position
    cdef int8_t* operation
    cdef int8_t* side
    cdef int16_t* symbol
    cdef double* price
    cdef double* size

    def __cinit__(self, Py_ssize_t cap=65536):
        self.cap = cap
        self.n = 0
        self.records = 0
        self.recv_ns = <int64_t*>PyMem_Malloc(cap * sizeof(int64_t))
        self.position = <int32_t*>PyMem_Malloc(cap * sizeof(int32_t))
        self.operation = <int8_t*>PyMem_Malloc(cap * sizeof(int8_t))
        self.side = <int8_t*>PyMem_Malloc(cap * sizeof(int8_t))
        self.symbol = <int16_t*>PyMem_Malloc(cap * sizeof(int16_t))
        self.price = <double*>PyMem_Malloc(cap * sizeof(double))
        self.size = <double*>PyMem_Malloc(cap * sizeof(double))
        if not (self.recv_ns and self.position and self.operation and self.side and self.symbol
                and self.price and self.size):
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.recv_ns)
        PyMem_Free(self.position)
        PyMem_Free(self.operation)
        PyMem_Free(self.side)
        PyMem_Free(self.symbol)
        PyMem_Free(self.price)
        PyMem_Free(self.size)

    def row(self, Py_ssize_t i):
        """(recv_ns, symbol index, position, operation, side, price, size) of row i."""
        if i < 0 or i >= self.n:
            raise IndexError(i)
        return (self.recv_ns[i], self.symbol[i], self.position[i], self.operation[i],
                self.side[i], self.price[i], self.size[i])


def record_crc(const unsigned char[::1] data):
    """zlib.crc32(data), as scan() computes a record's (for the tests)."""
    if data.shape[0] == 0:
        return 0
    return ibf_crc32(&data[0], <size_t>data.shape[0])


# -- msgpack reading (only what proto.codec writes for a DepthUpdate) ------------------------

cdef struct Cursor:
    const unsigned char* p
    const unsigned char* end
    bint ok


cdef inline uint64_t _be(const unsigned char* p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef inline bint _need(Cursor* c, Py_ssize_t n) noexcept nogil:
    if c.end - c.p < n:
        c.ok = False
        return False
    return True


cdef inline int64_t _int(Cursor* c) noexcept nogil:
    """A msgpack integer (msgspec's int field accepts only those); c.ok False otherwise."""
    cdef unsigned char b
    cdef uint64_t u
    if not _need(c, 1):
        return 0
    b = c.p[0]
    if b <= 0x7f:
        c.p += 1
        return b
    if b >= 0xe0:
        c.p += 1
        return <int8_t>b
    if b == 0xcc or b == 0xd0:
        if not _need(c, 2):
            return 0
        u = c.p[1]
        c.p += 2
        return <int64_t>u if b == 0xcc else <int8_t>u
    if b == 0xcd or b == 0xd1:
        if not _need(c, 3):
            return 0
        u = _be(c.p + 1, 2)
        c.p += 3
        return <int64_t>u if b == 0xcd else <int16_t>u
    if b == 0xce or b == 0xd2:
        if not _need(c, 5):
            return 0
        u = _be(c.p + 1, 4)
        c.p += 5
        return <int64_t>u if b == 0xce else <int32_t>u
    if b == 0xd3:
        if not _need(c, 9):
            return 0
        u = _be(c.p + 1, 8)
        c.p += 9
        return <int64_t>u
    if b == 0xcf:  # uint64: above int64's range it is clamped (only header fields get there;
        if not _need(c, 9):  # a version or position that large goes to the general decoder)
            return 0
        u = _be(c.p + 1, 8)
        c.p += 9
        return <int64_t>u if u <= <uint64_t>0x7fffffffffffffff else 0x7fffffffffffffff
    c.ok = False
    return 0


cdef inline double _float(Cursor* c) noexcept nogil:
    """A msgpack float64, or an integer (msgspec's float field takes both)."""
    cdef uint64_t u
    cdef double d
    if not _need(c, 1):
        return 0.0
    if c.p[0] == 0xcb:
        if not _need(c, 9):
            return 0.0
        u = _be(c.p + 1, 8)
        memcpy(&d, &u, 8)
        c.p += 9
        return d
    if c.p[0] == 0xca:  # float32: leave it to the general decoder
        c.ok = False
        return 0.0
    return <double>_int(c)


cdef inline const unsigned char* _str(Cursor* c, Py_ssize_t* length) noexcept nogil:
    """A msgpack string of ASCII bytes (others go to the general decoder, which checks UTF-8)."""
    cdef unsigned char b
    cdef Py_ssize_t n, head, i
    cdef const unsigned char* s
    if not _need(c, 1):
        return NULL
    b = c.p[0]
    if 0xa0 <= b <= 0xbf:
        n = b & 0x1f
        head = 1
    elif b == 0xd9:
        if not _need(c, 2):
            return NULL
        n = c.p[1]
        head = 2
    elif b == 0xda:
        if not _need(c, 3):
            return NULL
        n = <Py_ssize_t>_be(c.p + 1, 2)
        head = 3
    else:
        c.ok = False
        return NULL
    if not _need(c, head + n):
        return NULL
    s = c.p + head
    for i in range(n):
        if s[i] >= 0x80:
            c.ok = False
            return NULL
    c.p += head + n
    length[0] = n
    return s


cdef inline Py_ssize_t _array(Cursor* c) noexcept nogil:
    cdef unsigned char b
    if not _need(c, 1):
        return -1
    b = c.p[0]
    if 0x90 <= b <= 0x9f:
        c.p += 1
        return b & 0x0f
    if b == 0xdc:
        if not _need(c, 3):
            return -1
        c.p += 3
        return <Py_ssize_t>_be(c.p - 2, 2)
    if b == 0xdd:
        if not _need(c, 5):
            return -1
        c.p += 5
        return <Py_ssize_t>_be(c.p - 4, 4)
    c.ok = False
    return -1


cdef int _symbol_index(const unsigned char* s, Py_ssize_t n, const unsigned char** names,
                       Py_ssize_t* lengths, int count) noexcept nogil:
    cdef int k
    for k in range(count):
        if lengths[k] == n and memcmp(names[k], s, n) == 0:
            return k
    return -1


cdef Py_ssize_t _decode_depth(const unsigned char* p, Py_ssize_t length, int64_t recv_ns,
                              DepthBatch out, const unsigned char** names, Py_ssize_t* lengths,
                              int count, int64_t schema_version) noexcept:
    """Append a frame's DepthUpdates of our symbols to ``out``; -1 if the frame is anything
    but DepthUpdates exactly as proto.codec encodes them (or ``out`` has no room)."""
    cdef Cursor c
    cdef Py_ssize_t n, i, slen, first = out.n
    cdef const unsigned char* s
    cdef int64_t v, position, operation, side
    cdef int sym
    cdef double price, size
    c.p = p
    c.end = p + length
    c.ok = True
    n = _array(&c)
    if not c.ok or n < 0:
        return -1
    for i in range(n):
        if _array(&c) != N_FIELDS or not c.ok:
            out.n = first
            return -1
        s = _str(&c, &slen)
        if not c.ok or slen != 11 or memcmp(s, TAG, 11) != 0:
            out.n = first
            return -1
        v = _int(&c)
        _str(&c, &slen)  # src
        _int(&c)  # seq
        _int(&c)  # tseq
        _int(&c)  # ts
        s = _str(&c, &slen)  # symbol
        if not c.ok or v > schema_version:
            out.n = first
            return -1
        sym = _symbol_index(s, slen, names, lengths, count)
        position = _int(&c)
        operation = _int(&c)
        side = _int(&c)
        price = _float(&c)
        size = _float(&c)
        _str(&c, &slen)  # market_maker
        if not _need(&c, 1) or (c.p[0] != 0xc2 and c.p[0] != 0xc3):
            out.n = first
            return -1
        c.p += 1
        if (not c.ok or operation < 0 or operation > 2 or side < 0 or side > 1
                or position < -2147483648 or position > 2147483647):
            out.n = first
            return -1
        if sym < 0:
            continue  # not a symbol of ours: the engine skips it uncounted
        if out.n >= out.cap:
            out.n = first
            return -1
        out.recv_ns[out.n] = recv_ns
        out.symbol[out.n] = <int16_t>sym
        out.position[out.n] = <int32_t>position
        out.operation[out.n] = <int8_t>operation
        out.side[out.n] = <int8_t>side
        out.price[out.n] = price
        out.size[out.n] = size
        out.n += 1
    if c.p != c.end:  # trailing bytes: not a frame the codec would accept
        out.n = first
        return -1
    return out.n - first


def scan(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t size, tuple symbols,
         DepthBatch out, long long start_ns, long long end_ns, long long schema_version):
    """Walk records from ``pos``; returns (status, pos). Records whose topic does not start
    with ``md.`` are skipped (their CRC checked); depth-only frames go into ``out``."""
    cdef const unsigned char* base = &buf[0] if buf.shape[0] else NULL
    cdef const unsigned char* r
    cdef uint32_t body, crc
    cdef uint16_t topic_len, src_len
    cdef int64_t recv_ns
    cdef Py_ssize_t end, payload_at, room
    cdef int count = len(symbols), k
    cdef const unsigned char** names = <const unsigned char**>PyMem_Malloc(
        (count + 1) * sizeof(unsigned char*))
    cdef Py_ssize_t* lengths = <Py_ssize_t*>PyMem_Malloc((count + 1) * sizeof(Py_ssize_t))
    cdef bytes name
    try:
        for k in range(count):
            name = symbols[k]
            names[k] = <const unsigned char*>name
            lengths[k] = len(name)
        while True:
            if size - pos < HEAD_SIZE + CRC_SIZE:
                return SCAN_END, pos
            r = base + pos
            if memcmp(r, MARKER, 4) != 0:
                return SCAN_DAMAGED, pos
            body = <uint32_t>(r[4] | (r[5] << 8) | (r[6] << 16) | (<uint32_t>r[7] << 24))
            if body > MAX_BODY:
                return SCAN_DAMAGED, pos
            end = pos + 8 + body
            topic_len = <uint16_t>(r[54] | (r[55] << 8))
            src_len = <uint16_t>(r[56] | (r[57] << 8))
            if end + CRC_SIZE > size or HEAD_SIZE + topic_len + src_len > 8 + body:
                return SCAN_DAMAGED, pos
            memcpy(&crc, base + end, 4)  # little-endian machines only (x86_64, aarch64)
            if ibf_crc32(r, <size_t>(end - pos)) != crc:
                return SCAN_DAMAGED, pos
            memcpy(&recv_ns, r + 8, 8)
            if recv_ns > end_ns:
                return SCAN_PAST, pos
            if recv_ns < start_ns:  # before the range asked for: skipped, as the reader does
                out.records += 1
                pos = end + CRC_SIZE
                continue
            if topic_len < 3 or memcmp(r + HEAD_SIZE, b"md.", 3) != 0:
                out.records += 1
                pos = end + CRC_SIZE
                continue
            if topic_len < 8 or memcmp(r + HEAD_SIZE, b"md.depth", 8) != 0:
                return SCAN_OTHER, pos
            if out.cap - out.n < 4096:  # room for any frame we decode here, else resume later
                return SCAN_FULL, pos
            payload_at = pos + HEAD_SIZE + topic_len + src_len
            if _decode_depth(base + payload_at, end - payload_at, recv_ns, out, names, lengths,
                             count, schema_version) < 0:
                return SCAN_OTHER, pos
            out.records += 1
            pos = end + CRC_SIZE
    finally:
        PyMem_Free(names)
        PyMem_Free(lengths)


# -- the loop ------------------------------------------------------------------------------

cdef class DepthLoop:
    """One started BacktestEngine's per-update work for depth (see module comment)."""
    cdef object engine, strategy, venue, risk_marks, events, outbox, subscriptions
    cdef object deliver, advance, venue_out, mids, recorded_bars
    cdef list symbols, markets, market_books, makers
    cdef list depth_wanted, bar_key
    cdef bint mark_direct

    def __init__(self, engine, list symbols, bint mark_direct):
        self.engine = engine
        self.strategy = engine.strategy
        self.venue = engine.venue
        self.risk_marks = engine.risk.marks
        self.mark_direct = mark_direct
        self.events = engine._events
        self.outbox = engine._outbox
        self.subscriptions = engine._subscriptions
        self.deliver = engine._deliver
        self.advance = engine._advance
        self.venue_out = engine._venue_out
        self.mids = self.strategy.mids
        self.recorded_bars = engine._recorded_bars
        self.symbols = symbols
        self.markets = [engine.markets[s] for s in symbols]
        self.market_books = [engine.markets[s].book for s in symbols]
        self.makers = [engine._bar_makers[s] for s in symbols]
        self.bar_key = [(s, "bar") for s in symbols]
        self.depth_wanted = [(s, "depth") for s in symbols]

    def run(self, DepthBatch b, Py_ssize_t start=0):
        """Updates ``start..b.n`` of the batch, each as BacktestEngine.run does one."""
        cdef object engine = self.engine
        cdef list events = <list>self.events
        cdef object outbox = self.outbox
        cdef object venue = self.venue
        cdef object subscriptions = self.subscriptions
        cdef dict marks = <dict>self.risk_marks
        cdef dict mids = <dict>self.mids
        cdef object symbol, market, maker, done, bar, sbook_obj, live, mark, mid_obj
        cdef OrderBook mbook, sbook
        cdef Py_ssize_t i
        cdef long long now = engine.now, t, messages = 0, due
        cdef int k, st
        cdef double bid, ask, mid
        cdef bint mark_direct = self.mark_direct
        cdef list symbols = self.symbols, market_books = self.market_books
        cdef list makers = self.makers, depth_wanted = self.depth_wanted
        cdef dict strategy_books = <dict>self.strategy.books  # looked up per row, as live
        # the strategy's callback, resolved per batch (the general path resolves it per row:
        # a strategy that rebinds its own on_depth while running is not supported here)
        cdef object on_depth = self.strategy.on_depth
        cdef list lives = [venue._live.get(s) for s in symbols]
        cdef list wanted = [False] * len(symbols)  # subscriptions are only ever added
        cdef list seen_depth = [False] * len(symbols)
        # a bar maker's window in progress: only the general path (a trade print) opens one,
        # so it is read once per batch, then followed here
        cdef list building = [m.current is not None for m in makers]
        # the last mark and mid stored per symbol: an update that leaves them as they were
        # (a deeper row, at the same receive time) does not store an equal value again
        cdef list last_mark = [None] * len(symbols)
        cdef list last_mid = [None] * len(symbols)
        cdef object key_mark
        try:
            for i in range(start, b.n):
                t = b.recv_ns[i]
                k = b.symbol[i]
                symbol = symbols[k]
                due = <long long>(<tuple>events[0])[0]
                if due <= t:
                    engine.messages += messages
                    messages = 0
                    self.advance(t)
                    now = engine.now
                if t > now:
                    now = t
                    engine.now = t
                messages += 1
                # the market (SymbolMarket.apply)
                if not seen_depth[k]:
                    seen_depth[k] = True
                    (<object>self.markets[k]).has_depth = True
                mbook = <OrderBook>market_books[k]
                st = mbook.apply_depth(b.position[i], b.operation[i], b.side[i], b.price[i],
                                       b.size[i])
                if st != 0:
                    market = self.markets[k]
                    market.book_errors += 1
                    mbook.reset()
                # risk's mark (RiskEngine.on_mark)
                bid = mbook.best_bid_price()
                ask = mbook.best_ask_price()
                if mark_direct:
                    if isfinite(bid) and isfinite(ask) and bid > 0 and ask > 0:
                        mid = (bid + ask) / 2.0
                        mark = last_mark[k]
                        if (mark is None or PyFloat_AS_DOUBLE((<tuple>mark)[0]) != mid
                                or PyFloat_AS_DOUBLE((<tuple>mark)[1]) != now / 1e9
                                or marks.get(symbol) is not mark):
                            mark = (mid, now / 1e9)
                            marks[symbol] = mark
                            last_mark[k] = mark
                else:
                    engine.risk.on_mark(symbol, bid, ask)
                # the venue matches working orders on the new book (no trade prints in depth)
                live = lives[k]
                if live is None or live:
                    live = venue._live.get(symbol)
                    if live:
                        venue.on_market(symbol, [])
                if venue.reports:
                    self.venue_out()
                if outbox:
                    self.deliver()
                # bars built from trade prints: a window in progress may close with time
                if building[k] and symbol not in self.recorded_bars:
                    maker = makers[k]
                    done = maker.flush(now)
                    building[k] = maker.current is not None
                    if done:
                        (<list>engine.bars[symbol]).extend(done)
                        for bar in done:
                            if self.bar_key[k] in subscriptions:
                                engine._call(self.strategy.handle_market_data, bar)
                                if outbox:
                                    self.deliver()
                # the strategy (Strategy.handle_depth)
                if not wanted[k]:
                    if depth_wanted[k] not in subscriptions:
                        continue
                    wanted[k] = True
                sbook_obj = strategy_books.get(symbol)
                if sbook_obj is not None and type(sbook_obj) is not OrderBook:
                    self._general_row(b, i, symbol)  # not the core's book: Strategy's own code
                elif sbook_obj is not None:
                    sbook = <OrderBook>sbook_obj
                    st = sbook.apply_depth(b.position[i], b.operation[i], b.side[i],
                                           b.price[i], b.size[i])
                    if st != 0:
                        # refused: the general path logs, resets and says so; it meets the
                        # same refusal (a refused update leaves the rows as they were)
                        self._general_row(b, i, symbol)
                    else:
                        mid = sbook.mid()
                        if isfinite(mid):
                            mid_obj = last_mid[k]
                            if (mid_obj is None or PyFloat_AS_DOUBLE(mid_obj) != mid
                                    or mids.get(symbol) is not mid_obj):
                                mid_obj = mid
                                mids[symbol] = mid_obj
                                last_mid[k] = mid_obj
                        try:
                            on_depth(symbol, sbook)
                        except Exception:
                            engine._call(_reraise)
                if outbox:
                    self.deliver()
        finally:
            engine.messages += messages

    cdef _general_row(self, DepthBatch b, Py_ssize_t i, object symbol):
        """The strategy's side of row i through Strategy.handle_market_data itself."""
        from proto.schema import DepthUpdate
        msg = DepthUpdate(symbol=symbol, position=b.position[i], operation=b.operation[i],
                          side=b.side[i], price=b.price[i], size=b.size[i])
        self.engine._call(self.strategy.handle_market_data, msg)


def _reraise():
    """Raised inside the engine's _call so that its accounting and logging (callback_errors,
    log.exception with the strategy's traceback) are the general path's."""
    raise
