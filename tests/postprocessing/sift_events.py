"""Event streams shared by the tests of the one-pass sifting paths against the role chain."""

import numpy as np
from hypothesis import strategies as st

from postprocessing.alignment import ClockFit

H, V, D, A, SYNC = 0, 1, 2, 3, 7
PERIOD_PS = 1000.0
FIT = ClockFit(ref_slot=40, ref_time_ps=7_000_123, period_ps=PERIOD_PS * (1 + 2.5e-6),
               nominal_period_ps=PERIOD_PS, residual_rms_ps=40.0, n_sync=100)


@st.composite
def jittered_events(draw):
    """Sorted events with repeats, double/triple clicks, syncs, an unknown channel, and jitter
    up to half a slot, so that some events fall outside a gate.

    Returns (timestamps_ps int64, channels uint8, last slot or None when empty, seed)."""
    n = draw(st.integers(0, 150))
    gaps = draw(st.lists(st.sampled_from([0, 0, 1, 1, 2, 3, 7, 40]), min_size=n, max_size=n))
    channels = draw(st.lists(st.sampled_from([H, V, D, A, H, V, D, A, SYNC, 5]),
                             min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(-499, 499), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    slots = 100 + np.cumsum(np.array(gaps, np.int64))
    t = np.array([FIT.time_of_slot(int(s)) for s in slots]) + np.array(jitter, float)
    t = np.rint(t).astype(np.int64) if n else np.zeros(0, np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], np.array(channels, np.uint8)[order], int(slots[-1]) if n else None, seed
