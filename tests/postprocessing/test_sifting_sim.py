"""Align and sift real simulator output: recover the true slots, then the expected error rates."""

import numpy as np
import pytest
from postprocessing.randomness import ProtocolRandom

det_rng = ProtocolRandom.deterministic_for_tests  # the protocol's random source, seeded

link = pytest.importorskip("sim_backend.link")

from postprocessing.alignment import SlotTracker  # noqa: E402
from postprocessing.sifting import sift_b92, sift_bb84  # noqa: E402
from sim_backend.params import LinkParams  # noqa: E402
from sim_backend.pattern import sync_on  # noqa: E402

CHUNK = 1_000_000
N_CHUNKS = 6
GATE_PS = 250.0  # 5 sigma of the preset's 50 ps jitter


def run_aligned(params, seed):
    sim = link.LinkSimulator(params, seed=seed)
    total = CHUNK * N_CHUNKS
    tracker = SlotTracker(nominal_period_ps=params.slot_ps, sync_period=params.sync_period,
                          sync_on_bits=sync_on(sim.sync_key,
                                               np.arange(total // params.sync_period + 2)),
                          gate_ps=GATE_PS)
    slots, valid, channels, truth = [], [], [], []
    for _ in range(N_CHUNKS):
        chunk = sim.run_slots(CHUNK)
        s, v = tracker.update(chunk.timestamps_ps, chunk.channels)
        slots.append(s)
        valid.append(v)
        channels.append(chunk.channels)
        truth.append(chunk.true_slots)
    return (sim, tracker, np.concatenate(slots), np.concatenate(valid),
            np.concatenate(channels), np.concatenate(truth))


def expected_qber_bb84(p, mu):
    """reference.md §1: E*Q = Y0/2 + e_det (1 - exp(-eta mu)), Q = Y0 + 1 - exp(-eta mu)."""
    eta = p.detector_efficiency * 10 ** (-p.loss_db_per_km * p.distance_km / 10)
    det = 1 - np.exp(-eta * mu)
    return (p.dark_count_probability / 2 + p.misalignment * det) / (p.dark_count_probability + det)


@pytest.fixture(scope="module")
def bb84_run():
    params = LinkParams.preset("gys", distance_km=5.0, clock_offset_ps=7_777_777_777_777,
                               clock_drift_ppm=7.3, sync_period=1000)
    return params, run_aligned(params, seed=2024)


def test_simulator_slots_recovered(bb84_run):
    params, (sim, tracker, slots, valid, channels, truth) = bb84_run
    assert tracker.fit is not None and tracker.counts.n_refits == N_CHUNKS - 1
    np.testing.assert_array_equal(slots[valid], truth[valid])
    # 5-sigma Gaussian gate keeps all but 5.7e-7 of events; allow 5 binomial sigma (+1)
    n, p = valid.size, 5.7e-7
    assert valid.size - valid.sum() <= n * p + 5 * np.sqrt(n * p) + 1
    assert abs(tracker.fit.drift_ppm - params.clock_drift_ppm) < 0.05


def test_simulator_bb84_sifting(bb84_run):
    params, (sim, tracker, slots, valid, channels, truth) = bb84_run
    rng = det_rng(5)
    res = sift_bb84(slots, channels, sim.alice_pattern, rng, valid=valid, through_wire=True)
    assert len(res.alice) == len(res.bob) > 10_000
    np.testing.assert_array_equal(res.alice.slots, res.bob.slots)
    np.testing.assert_array_equal(res.alice.intensity, res.bob.intensity)
    # sifting keeps about half of the detections (50/50 bases on both sides):
    # binomial sigma sqrt(n/4)
    n_det = res.counts.n_detected_slots
    assert abs(len(res.bob) - n_det / 2) < 5 * np.sqrt(n_det / 4)
    for k, mu in enumerate((params.mu, params.nu1)):
        sel = res.bob.intensity == k
        n = int(sel.sum())
        qber = float(np.mean(res.alice.bits[sel] != res.bob.bits[sel]))
        e = expected_qber_bb84(params, mu)
        # binomial sigma of the error fraction
        assert abs(qber - e) < 5 * np.sqrt(e * (1 - e) / n), (k, qber, e, n)


def test_simulator_b92_sifting():
    # no dead time: B92 loads the inconclusive H and D detectors about three times more than V
    # and A, so dead time alone would raise the conclusive fraction above the single-photon value
    params = LinkParams.preset("gys", protocol="b92", distance_km=5.0, p_signal=1.0,
                               p_decoy1=0.0, dead_time_ns=0.0, clock_offset_ps=-123_456_789_012,
                               clock_drift_ppm=-4.1, sync_period=1000)
    sim, tracker, slots, valid, channels, truth = run_aligned(params, seed=99)
    np.testing.assert_array_equal(slots[valid], truth[valid])
    res = sift_b92(slots, channels, sim.alice_pattern, det_rng(6), valid=valid,
                   through_wire=True)
    n = len(res.bob)
    assert n == len(res.alice) > 5_000
    # reference.md §2 with misalignment e: an error needs the wrong port (e) behind the analyser
    # that would have been inconclusive; a right conclusive result is the 1/2 of the other one.
    e = params.misalignment
    expect = e / (e + 0.5)
    qber = float(np.mean(res.alice.bits != res.bob.bits))
    assert abs(qber - expect) < 5 * np.sqrt(expect * (1 - expect) / n), (qber, expect, n)
    # conclusive fraction (e + 1/2) / 2 of detected slots; binomial sigma
    n_det = res.counts.n_detected_slots
    frac = (e + 0.5) / 2
    assert abs(n / n_det - frac) < 5 * np.sqrt(frac * (1 - frac) / n_det)
