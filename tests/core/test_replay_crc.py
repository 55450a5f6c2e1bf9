# SPDX-License-Identifier: GPL-3.0-or-later
"""core.replay's record CRC (PCLMULQDQ folding on x86-64, zlib otherwise) is zlib.crc32."""
from __future__ import annotations

import random
import zlib

from hypothesis import given
from hypothesis import strategies as st

from core.replay import record_crc
from tests.core._hyp import QUICK


def test_every_length_up_to_600_bytes():
    rng = random.Random(7)
    for n in range(600):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert record_crc(data) == zlib.crc32(data), n
        assert record_crc(b"\xff" * n) == zlib.crc32(b"\xff" * n), n


@QUICK
@given(st.binary(max_size=5000), st.integers(0, 15))
def test_random_buffers_and_offsets(data, skip):
    view = memoryview(data)[min(skip, len(data)):]
    assert record_crc(bytes(view)) == zlib.crc32(view)
