# SPDX-License-Identifier: GPL-3.0-or-later
"""OrderBook.size_imbalance (plain size imbalance over N levels) against the reference."""
from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from core.book import OrderBook
from tests.core import reference as ref
from tests.core._hyp import QUICK, book_steps, same_float
from tests.core.test_core_book_properties import apply_step


def test_size_imbalance_by_hand():
    book = OrderBook(10)
    assert math.isnan(book.size_imbalance(5))
    for i, (bid, ask) in enumerate([(100.0, 50.0), (10.0, 10.0), (5.0, 0.0)]):
        book.update_depth(i, 0, 1, 10.0 - i * 0.01, bid)
        book.update_depth(i, 0, 0, 10.01 + i * 0.01, ask)
    assert book.size_imbalance(1) == (100.0 - 50.0) / 150.0
    assert book.size_imbalance(5) == (115.0 - 60.0) / 175.0
    assert math.isnan(book.size_imbalance(0))


@QUICK
@given(st.data())
def test_size_imbalance_agrees_with_reference(data):
    depth = data.draw(st.integers(1, 12), label="depth")
    steps = data.draw(st.lists(book_steps(depth), max_size=60), label="steps")
    book, rb = OrderBook(depth), ref.RefBook(depth)
    for step in steps:
        assert apply_step(book, step) == apply_step(rb, step)
        for k in (-1, 0, 1, 3, 5, depth, depth + 2):
            assert same_float(book.size_imbalance(k), rb.size_imbalance(k)), (k, step)
