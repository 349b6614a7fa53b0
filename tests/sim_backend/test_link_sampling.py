"""The event-driven sampling kernels: thinning, resumption, dead-time pass bookkeeping."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim_backend.physics import sampling

K = 5.0


def state(seed: int) -> np.ndarray:
    return np.array([seed], dtype=np.uint64)


@given(first=st.integers(0, 10**12), n=st.integers(1, 200_000),
       p=st.floats(0.0, 1.0), seed=st.integers(0, 2**63 - 1))
def test_bernoulli_slots_are_increasing_and_inside_the_range(first, n, p, seed):
    slots = sampling.bernoulli_slots(first, first + n, p, state(seed))
    assert slots.dtype == np.int64
    assert np.all(np.diff(slots) > 0)
    if slots.size:
        assert first <= slots[0] and slots[-1] < first + n
    if p == 1.0:
        assert slots.size == n
    if p == 0.0:
        assert slots.size == 0


def test_bernoulli_count_and_uniformity():
    p, n = 1e-3, 50_000_000
    slots = sampling.bernoulli_slots(0, n, p, state(61))
    # Binomial count.
    assert abs(slots.size - n * p) <= K * math.sqrt(n * p * (1 - p))
    # Successes are uniform: the mean position is n/2 with sd n / sqrt(12 m).
    assert abs(slots.mean() - n / 2) <= K * n / math.sqrt(12 * slots.size)


def test_resuming_a_full_buffer_gives_the_same_stream():
    whole = np.empty(10_000, dtype=np.int64)
    n_whole, _, done = sampling.geometric_slots(np.int64(-1), np.int64(1_000_000), 0.002,
                                                state(62), whole)
    assert done
    st_small = state(62)
    parts, last = [], np.int64(-1)
    while True:
        buf = np.empty(7, dtype=np.int64)
        n, last, done = sampling.geometric_slots(np.int64(last), np.int64(1_000_000), 0.002,
                                                 st_small, buf)
        parts.append(buf[:n].copy())
        if done:
            break
    np.testing.assert_array_equal(np.concatenate(parts), whole[:n_whole])


def test_dead_time_pass_reports_a_small_buffer_and_keeps_state():
    slots = np.arange(0, 1000, 10, dtype=np.int64)
    dets = np.zeros(slots.size, dtype=np.uint8)
    dead = np.array([24, 0, 0, 0], dtype=np.int64)
    dead_until = np.zeros(4, dtype=np.int64)
    pending = np.zeros((4, sampling.AFTERPULSE_QUEUE), dtype=np.int64)
    n_pending = np.zeros(4, dtype=np.int64)
    small = np.empty(3, dtype=np.int64), np.empty(3, dtype=np.uint8)
    assert sampling.dead_time_afterpulse(slots, dets, np.int64(1000), dead, 0.0, 1.0,
                                         dead_until.copy(), pending, n_pending, state(1),
                                         *small) == -1
    out = np.empty(200, dtype=np.int64), np.empty(200, dtype=np.uint8)
    n = sampling.dead_time_afterpulse(slots, dets, np.int64(1000), dead, 0.0, 1.0, dead_until,
                                      pending, n_pending, state(1), *out)
    # Clicks every 10 slots, 24 blocked after each: every third survives (0, 30, 60, ...).
    np.testing.assert_array_equal(out[0][:n], np.arange(0, 1000, 30))
    assert dead_until[0] == 990 + 25
