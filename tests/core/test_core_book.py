# SPDX-License-Identifier: GPL-3.0-or-later
"""Named scenarios for core.book.OrderBook."""
from __future__ import annotations

import math
import struct
import sys
import tracemalloc

import pytest

from core import book as B
from core.book import ASK, BID, DELETE, INSERT, UPDATE, BookError, OrderBook, pack_records


def bids_of(prices_sizes):
    return [(float(p), float(s)) for p, s in prices_sizes]


def full_bid_book(depth=5):
    book = OrderBook(depth)
    book.apply_snapshot(bids=[(100 - i, 10 + i) for i in range(depth)], asks=[(101 + i, 20 + i) for i in range(depth)])
    return book


# -- position-based depth (IB updateMktDepth / updateMktDepthL2) ------------------

def test_insert_at_position_shifts_rows_down_and_drops_last():
    book = full_bid_book(5)
    book.update_depth(1, INSERT, BID, 99.5, 7)
    assert book.bids() == bids_of([(100, 10), (99.5, 7), (99, 11), (98, 12), (97, 13)])
    assert book.bid_count == 5 and not book.stale


def test_insert_into_partly_filled_side_grows_it_without_dropping():
    book = OrderBook(5)
    book.update_depth(0, INSERT, ASK, 101, 1)
    book.update_depth(1, INSERT, ASK, 102, 2)
    book.update_depth(0, INSERT, ASK, 100.5, 3)
    assert book.asks() == bids_of([(100.5, 3), (101, 1), (102, 2)])


def test_insert_at_last_position_of_full_side_replaces_last_row():
    book = full_bid_book(5)
    book.update_depth(4, INSERT, BID, 96.5, 1)
    assert book.bids()[-1] == (96.5, 1.0) and book.bid_count == 5
    assert book.bids()[3] == (97.0, 13.0)


def test_insert_is_not_an_overwrite():
    # nautilus_trader's adapter overwrites on insert; IB shifts.
    book = OrderBook(10)
    book.update_depth(0, INSERT, BID, 100, 1)
    book.update_depth(0, INSERT, BID, 100.5, 2)
    assert book.bids() == bids_of([(100.5, 2), (100, 1)])


def test_delete_shifts_rows_up():
    book = full_bid_book(5)
    book.update_depth(1, DELETE, BID, 99, 11)
    assert book.bids() == bids_of([(100, 10), (98, 12), (97, 13), (96, 14)])
    assert book.bid_count == 4


def test_update_overwrites_only_that_row():
    book = full_bid_book(5)
    book.update_depth(2, UPDATE, ASK, 103, 99)
    assert book.asks() == bids_of([(101, 20), (102, 21), (103, 99), (104, 23), (105, 24)])
    assert book.bids() == full_bid_book(5).bids()


def test_side_zero_is_ask_and_side_one_is_bid():
    book = OrderBook(3)
    book.update_depth(0, INSERT, 0, 101, 1)
    book.update_depth(0, INSERT, 1, 100, 2)
    assert (book.best_ask_price(), book.best_bid_price()) == (101.0, 100.0)
    assert (ASK, BID) == (0, 1)


def test_insert_beyond_row_count_is_rejected_and_marks_stale():
    book = OrderBook(10)
    book.update_depth(0, INSERT, BID, 100, 1)
    with pytest.raises(BookError, match="beyond the current row count") as exc:
        book.update_depth(2, INSERT, BID, 99, 1)
    assert exc.value.status == B.ERR_GAP
    assert book.bids() == [(100.0, 1.0)] and book.stale and book.stale_reason == B.ERR_GAP


def test_update_or_delete_of_missing_row_is_rejected_and_marks_stale():
    for op in (UPDATE, DELETE):
        book = OrderBook(10)
        book.update_depth(0, INSERT, ASK, 101, 1)
        with pytest.raises(BookError):
            book.update_depth(1, op, ASK, 102, 1)
        assert book.asks() == [(101.0, 1.0)] and book.stale


@pytest.mark.parametrize(
    "args, status, words",
    [
        ((10, INSERT, BID, 100.0, 1.0), B.ERR_POSITION, "outside the book's depth"),
        ((-1, INSERT, BID, 100.0, 1.0), B.ERR_POSITION, "outside the book's depth"),
        ((0, INSERT, BID, 100.0, -1.0), B.ERR_SIZE, "size is negative"),
        ((0, INSERT, BID, 100.0, math.nan), B.ERR_SIZE, "size"),
        ((0, INSERT, BID, 100.0, math.inf), B.ERR_SIZE, "size"),
        ((0, INSERT, BID, math.nan, 1.0), B.ERR_PRICE, "price is NaN"),
        ((0, INSERT, BID, math.inf, 1.0), B.ERR_PRICE, "infinite"),
        ((0, INSERT, BID, -math.inf, 1.0), B.ERR_PRICE, "infinite"),
        ((0, 3, BID, 100.0, 1.0), B.ERR_OPERATION, "unknown operation"),
        ((0, -1, BID, 100.0, 1.0), B.ERR_OPERATION, "unknown operation"),
        ((0, INSERT, 2, 100.0, 1.0), B.ERR_SIDE, "unknown side"),
    ],
)
def test_bad_depth_update_raises_book_error_and_leaves_rows_untouched(args, status, words):
    book = full_bid_book(10)
    before = (book.bids(), book.asks())
    with pytest.raises(BookError, match=words) as exc:
        book.update_depth(*args)
    assert isinstance(exc.value, ValueError)
    assert exc.value.status == status
    assert (book.bids(), book.asks()) == before
    assert book.stale and book.stale_reason == status


def test_stale_book_keeps_applying_updates_until_snapshot_clears_it():
    book = full_bid_book(5)
    with pytest.raises(BookError):
        book.update_depth(0, 9, BID, 1, 1)
    book.update_depth(0, UPDATE, BID, 100.25, 5)
    assert book.stale and book.best_bid_price() == 100.25
    book.apply_snapshot(bids=[(99, 1)], asks=[(100, 1)])
    assert not book.stale and book.stale_reason == B.OK
    assert book.bids() == [(99.0, 1.0)]


def test_reset_empties_book_and_clears_stale():
    book = full_bid_book(5)
    with pytest.raises(BookError):
        book.update_depth(7, INSERT, BID, 1, 1)
    book.reset()
    assert book.bids() == [] and book.asks() == [] and not book.stale


def test_bad_snapshot_is_rejected_whole_and_marks_stale():
    book = full_bid_book(3)
    before = (book.bids(), book.asks())
    with pytest.raises(BookError, match="more rows than"):
        book.apply_snapshot(bids=[(1, 1)] * 4)
    with pytest.raises(BookError, match="price"):
        book.apply_snapshot(bids=[(1, 1)], asks=[(math.nan, 1)])
    assert (book.bids(), book.asks()) == before and book.stale


def test_crossed_book_from_feed_is_reported_not_fixed():
    book = OrderBook(5)
    book.update_depth(0, INSERT, BID, 101, 1)
    book.update_depth(0, INSERT, ASK, 100, 1)
    assert book.crossed and not book.locked and book.spread() == -1.0
    assert book.bids() == [(101.0, 1.0)] and book.asks() == [(100.0, 1.0)]


def test_locked_book_is_reported():
    book = OrderBook(5)
    book.update_top(100, 1, 100, 2)
    assert book.locked and not book.crossed


def test_market_maker_is_not_stored_rows_are_positional():
    book = OrderBook(2)
    book.update_depth(0, INSERT, BID, 100, 1)
    book.update_depth(0, INSERT, BID, 100, 2)  # same price, another market maker
    assert book.bids() == [(100.0, 2.0), (100.0, 1.0)]


# -- price-level and top-of-book updates ---------------------------------------------

def test_price_level_update_keeps_sides_sorted_and_size_zero_removes():
    book = OrderBook(5)
    for px in (100, 99, 101):
        book.update_level(BID, px, px - 90)
    for px in (103, 102, 104):
        book.update_level(ASK, px, 1)
    assert book.bids() == bids_of([(101, 11), (100, 10), (99, 9)])
    assert [p for p, _ in book.asks()] == [102.0, 103.0, 104.0]
    book.update_level(BID, 100, 0)
    book.update_level(BID, 100.5, 0)  # removing an absent level is a no-op
    book.update_level(BID, 99, 42)
    assert book.bids() == bids_of([(101, 11), (99, 42)]) and not book.stale


def test_price_level_insert_into_full_side_drops_worst_and_ignores_levels_behind_it():
    book = OrderBook(3)
    for px in (100, 99, 98):
        book.update_level(BID, px, 1)
    book.update_level(BID, 97, 5)  # behind a full side: not held
    assert [p for p, _ in book.bids()] == [100.0, 99.0, 98.0]
    book.update_level(BID, 99.5, 5)
    assert [p for p, _ in book.bids()] == [100.0, 99.5, 99.0]


def test_price_level_bad_input_raises_and_marks_stale():
    book = OrderBook(3)
    book.update_level(ASK, 100, 1)
    for args in ((ASK, math.nan, 1), (ASK, 100, -2), (5, 100, 1)):
        with pytest.raises(BookError):
            book.update_level(*args)
    assert book.asks() == [(100.0, 1.0)] and book.stale


def test_top_of_book_updates_replace_each_side_with_one_row():
    book = full_bid_book(5)
    book.update_top(99.5, 3, 100.5, 4)
    assert book.bids() == [(99.5, 3.0)] and book.asks() == [(100.5, 4.0)]
    book.update_bid(99.75, 2)
    book.update_ask(100.25, 0)  # size 0: no ask quoted
    assert book.bids() == [(99.75, 2.0)] and book.asks() == []


def test_top_of_book_update_is_all_or_nothing():
    book = OrderBook(5)
    book.update_top(99, 1, 100, 1)
    with pytest.raises(BookError):
        book.update_top(99.5, 1, math.nan, 1)
    assert book.bids() == [(99.0, 1.0)] and book.asks() == [(100.0, 1.0)] and book.stale


# -- queries ------------------------------------------------------------------------

def test_queries_on_a_known_book():
    book = OrderBook(5)
    book.apply_snapshot(bids=[(100, 10), (99.75, 20), (99.5, 30)], asks=[(100.25, 30), (100.5, 10)])
    assert book.mid() == 100.125
    assert book.spread() == 0.25
    assert book.microprice() == pytest.approx((100 * 30 + 100.25 * 10) / 40)
    # weights 2, 1 over two levels: B = 2*10 + 20 = 40, A = 2*30 + 10 = 70
    assert book.imbalance(2) == pytest.approx((40 - 70) / 110)
    assert book.imbalance(1) == pytest.approx((10 - 30) / 40)
    assert book.avg_fill_price(True, 35) == pytest.approx((30 * 100.25 + 5 * 100.5) / 35)
    assert book.avg_fill_price(False, 15) == pytest.approx((10 * 100 + 5 * 99.75) / 15)
    assert math.isnan(book.avg_fill_price(True, 41))  # more than the visible asks
    assert book.size_within_ticks(BID, 1, 0.25) == 30.0
    assert book.size_within_ticks(ASK, 0, 0.25) == 30.0
    assert book.size_within_ticks(ASK, 1, 0.25) == 40.0
    assert (book.level_price(BID, 2), book.level_size(BID, 2)) == (99.5, 30.0)
    assert math.isnan(book.level_price(ASK, 2))


def test_size_within_ticks_tolerates_float_grid_error():
    book = OrderBook(5)
    book.apply_snapshot(bids=[(0.3, 1), (0.2, 1), (0.1, 1)])
    # 0.3 - 2 * 0.1 is not exactly 0.1 in binary; the half-tick slack keeps the row.
    assert book.size_within_ticks(BID, 2, 0.1) == 3.0


def test_empty_book_queries_are_nan():
    book = OrderBook(5)
    for q in (book.mid, book.spread, book.microprice, book.best_bid_price, book.best_ask_size):
        assert math.isnan(q())
    assert math.isnan(book.imbalance(3))
    assert book.size_within_ticks(BID, 3, 0.01) == 0.0
    assert not book.crossed and not book.locked


# -- batch path ------------------------------------------------------------------------

def test_batch_applies_packed_records_in_order():
    records = [(0, INSERT, BID, 100.0, 1.0), (0, INSERT, BID, 100.5, 2.0), (1, DELETE, BID, 0.0, 0.0),
               (0, INSERT, ASK, 101.0, 3.0)]
    buf = pack_records(records)
    assert len(buf) == 4 * B.RECORD_SIZE == 4 * struct.calcsize(B.RECORD_FORMAT)
    book = OrderBook(10)
    assert book.apply_batch(buf) == 4
    assert book.bids() == [(100.5, 2.0)] and book.asks() == [(101.0, 3.0)] and not book.stale
    assert book.apply_batch(bytearray(buf)[:0]) == 0


def test_batch_stops_at_first_bad_record_and_returns_its_index():
    records = [(0, INSERT, BID, 100.0, 1.0), (0, INSERT, BID, 101.0, 1.0), (5, INSERT, BID, 99.0, 1.0),
               (0, INSERT, ASK, 102.0, 1.0)]
    book = OrderBook(10)
    assert book.apply_batch(memoryview(pack_records(records))) == 2
    assert book.bids() == [(101.0, 1.0), (100.0, 1.0)] and book.asks() == []
    assert book.stale and book.stale_reason == B.ERR_GAP


def test_batch_rejects_a_buffer_that_is_not_whole_records():
    book = OrderBook(10)
    with pytest.raises(BookError, match="whole number"):
        book.apply_batch(pack_records([(0, INSERT, BID, 100.0, 1.0)])[:-1])
    assert book.bids() == [] and not book.stale


def test_batch_accepts_any_contiguous_buffer():
    import array
    raw = pack_records([(0, INSERT, ASK, 100.0, 1.0)])
    book = OrderBook(2)
    assert book.apply_batch(array.array("b", raw)) == 1
    assert book.asks() == [(100.0, 1.0)]


# -- memory ----------------------------------------------------------------------------

def test_ten_level_book_is_under_one_kib():
    book = OrderBook(10)
    assert book.nbytes == 2 * 10 * 16
    assert sys.getsizeof(book) < 1024  # __sizeof__ includes the row storage


def test_ten_thousand_books_are_under_ten_mib():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        books = [OrderBook(10, instrument_id=i) for i in range(10_000)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(books) == 10_000
    assert used < 10 * 1024 * 1024


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        OrderBook(0)
    assert OrderBook(50).depth == 50
