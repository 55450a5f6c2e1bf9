# SPDX-License-Identifier: GPL-3.0-or-later
"""The compiled book and the plain-Python reference, driven by the same random sessions."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.book import BookError, OrderBook, pack_records
from tests.core import reference as ref
from tests.core._hyp import FUZZ, QUICK, book_steps, same_float


def apply_step(book, step):
    """Apply one step; return the BookStatus of a rejection, 0 if accepted (batch: count applied)."""
    kind, *args = step
    try:
        if kind == "depth":
            book.update_depth(*args)
        elif kind == "level":
            book.update_level(*args)
        elif kind == "top_side":
            side, price, size = args
            (book.update_bid if side == 1 else book.update_ask)(price, size)
        elif kind == "top":
            book.update_top(*args)
        elif kind == "snapshot":
            book.apply_snapshot(*args)
        elif kind == "batch":
            if isinstance(book, OrderBook):
                return ("batch", book.apply_batch(pack_records(args[0])))
            return ("batch", book.apply_batch(args[0]))
        elif kind == "reset":
            book.reset()
    except (BookError, ref.RefBookError) as exc:
        return exc.status
    return 0


def assert_same_book(book: OrderBook, rb: ref.RefBook) -> None:
    assert book.bids() == [tuple(r) for r in rb.bids]
    assert book.asks() == [tuple(r) for r in rb.asks]
    assert book.bid_count == len(rb.bids) and book.ask_count == len(rb.asks)
    assert book.stale == rb.stale
    assert book.stale_reason == rb.stale_reason
    assert book.crossed == rb.crossed
    assert book.locked == rb.locked
    for name in ("best_bid_price", "best_bid_size", "best_ask_price", "best_ask_size", "mid", "spread", "microprice"):
        assert same_float(getattr(book, name)(), getattr(rb, name)()), name
    for k in (0, 1, 3, book.depth):
        assert same_float(book.imbalance(k), rb.imbalance(k)), ("imbalance", k)
    for buy in (True, False):
        for qty in (0.0, 1.0, 150.0, 1000.0, 1e12):
            assert same_float(book.avg_fill_price(buy, qty), rb.avg_fill_price(buy, qty)), (buy, qty)
    for side in (0, 1, 2):
        for ticks in (-1, 0, 2, 5):
            for tick in (0.01, 0.25, 0.0):
                assert same_float(
                    book.size_within_ticks(side, ticks, tick), rb.size_within_ticks(side, ticks, tick)
                ), (side, ticks, tick)


def run_session(depth, steps):
    book, rb = OrderBook(depth), ref.RefBook(depth)
    for i, step in enumerate(steps):
        before = (book.bids(), book.asks())
        got, want = apply_step(book, step), apply_step(rb, step)
        assert got == want, (i, step)
        if isinstance(got, int) and got != 0:
            # A rejected update leaves every row as it was and marks the book stale.
            assert (book.bids(), book.asks()) == before
            assert book.stale
        assert_same_book(book, rb)


@QUICK
@given(st.data())
def test_random_sessions_match_reference_exactly(data):
    depth = data.draw(st.integers(1, 12), label="depth")
    steps = data.draw(st.lists(book_steps(depth), max_size=60), label="steps")
    run_session(depth, steps)


@QUICK
@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from([0, 0, 1, 2]), st.sampled_from([0, 1]),
                          st.integers(90, 110).map(float), st.integers(1, 9).map(float)), max_size=200))
def test_valid_depth_streams_match_reference(records):
    # Mostly-valid IB streams reach deep, full books more often than the mixed sessions do.
    run_session(10, [("depth", *r) for r in records])


@pytest.mark.fuzz
@FUZZ
@given(st.data())
def test_fuzz_long_random_sessions_match_reference(data):
    depth = data.draw(st.integers(1, 24), label="depth")
    steps = data.draw(st.lists(book_steps(depth), max_size=400), label="steps")
    run_session(depth, steps)
