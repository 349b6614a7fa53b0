"""The public sync sequence: firmware_protocol's numpy definition equals the simulator's."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from firmware_protocol.sync import sync_on_bits
from sim_backend.pattern import sync_on


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**40))
def test_matches_the_simulated_board(sync_key, first):
    idx = np.arange(first, first + 257, dtype=np.uint64)
    assert np.array_equal(sync_on_bits(sync_key, first, 257), sync_on(sync_key, idx))


def test_sequence_is_balanced():
    # 2^16 fair bits: the count of ones has sigma 128; 5 sigma = 640.
    bits = sync_on_bits(12345, 0, 2**16)
    assert abs(int(bits.sum()) - 2**15) < 640


def test_negative_range_is_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        sync_on_bits(1, -1, 10)
