"""A stand-in with the LinkSimulator interface, so board tests do not depend on the physics."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from sim_backend.controls import LinkControls
from sim_backend.pattern import pattern_at


@dataclass
class FakeChunk:
    first_slot: int
    n_slots: int
    timestamps_ps: np.ndarray
    channels: np.ndarray
    true_slots: np.ndarray


class FakeLink:
    """Clicks in a fraction ``click_probability`` of slots, Bob-clock times with Gaussian jitter."""

    def __init__(self, *, click_probability: float = 0.01, jitter_ps: float = 30.0,
                 clock_hz: float = 1e9, clock_offset_ps: int = 123_456, clock_drift_ppm=3.0,
                 seed: int = 7, actual_jitter_ps: float | None = None):
        self.params = SimpleNamespace(clock_hz=clock_hz, clock_offset_ps=clock_offset_ps,
                                      clock_drift_ppm=clock_drift_ppm, jitter_ps=jitter_ps,
                                      sync_period=1000, mu=0.5, nu1=0.1, nu2=0.0, p_signal=1.0,
                                      p_decoy1=0.0, p_basis_x=0.5, dead_time_ns=100.0)
        self.controls = LinkControls()
        self.pattern_key = 0x1234_5678_9ABC
        self.sync_key = 0x42
        self.next_slot = 0
        self.click_probability = click_probability
        # Jitter actually applied; larger than the declared ``jitter_ps`` to test the board's
        # handling of events that stray outside their window.
        self.actual_jitter_ps = jitter_ps if actual_jitter_ps is None else actual_jitter_ps
        self._rng = np.random.default_rng(seed)
        self.chunks: list[FakeChunk] = []      # everything run_slots returned, for the tests

    def t_ps(self, slots: np.ndarray) -> np.ndarray:
        p = self.params
        slot_ps = 1e12 / p.clock_hz * (1 + p.clock_drift_ppm * 1e-6)
        jitter = self._rng.normal(0.0, self.actual_jitter_ps, slots.size)
        return np.rint(p.clock_offset_ps + slots * slot_ps + jitter).astype(np.int64)

    def run_slots(self, n_slots: int) -> FakeChunk:
        first = self.next_slot
        slots = first + np.flatnonzero(self._rng.random(n_slots) < self.click_probability)
        ts = self.t_ps(slots)
        order = np.argsort(ts, kind="stable")
        chunk = FakeChunk(first, n_slots, ts[order],
                          self._rng.integers(0, 4, slots.size).astype(np.uint8)[order],
                          slots[order].astype(np.int64))
        self.next_slot = first + n_slots
        self.chunks.append(chunk)
        return chunk

    def alice_pattern(self, slots) -> np.ndarray:
        return pattern_at(self.pattern_key, np.asarray(slots, dtype=np.uint64))


def recording_link(seed: int = 5, **overrides):
    """The real LinkSimulator (GYS preset) that also keeps every chunk it returned."""
    from sim_backend.link import LinkSimulator
    from sim_backend.params import LinkParams

    class RecordingLink(LinkSimulator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.chunks = []

        def run_slots(self, n_slots):
            chunk = super().run_slots(n_slots)
            self.chunks.append(chunk)
            return chunk

    params = LinkParams.preset("gys", **{"distance_km": 5.0, **overrides})
    return RecordingLink(params, seed=seed)
