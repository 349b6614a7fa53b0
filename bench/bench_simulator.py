"""Simulated link throughput: pulses (slots) and detection events per wall second, one core.

Ours: ``LinkSimulator.run_slots`` (event driven: thinning + a sequential numba pass for dead
time and afterpulsing, timestamps with jitter, sync pulses), GYS preset, BB84 with decoys,
1 GHz clock. Baseline: the plain numpy per-pulse way (draw every pulse's pattern, photon
number, transmission, detector and dark counts; no dead time), on a smaller run.
"""

from __future__ import annotations

import numpy as np

from bench.common import best_time, emit, progress
from sim_backend.link import LinkSimulator, simulate
from sim_backend.params import LinkParams

BENCH = "simulator"


def per_pulse_numpy(params: LinkParams, n: int, rng: np.random.Generator) -> int:
    """Baseline: every pulse drawn explicitly; returns the number of detector clicks."""
    intensity = rng.choice(3, n, p=params.intensity_probabilities)
    basis = rng.integers(0, 2, n)
    value = rng.integers(0, 2, n)
    photons = rng.poisson(np.asarray(params.intensities)[intensity])
    arrived = rng.binomial(photons, params.transmittance)
    # Passive basis choice and analyser port of each arriving photon (one per pulse is enough
    # at these rates; a faithful baseline would loop over photons).
    bob_basis = rng.integers(0, 2, n)
    wrong_port = rng.random(n) < params.misalignment
    port = np.where(bob_basis == basis, value ^ wrong_port, rng.integers(0, 2, n))
    det = 2 * bob_basis + port
    clicks = np.bincount(det[arrived > 0], minlength=4)
    dark = rng.random((4, n)) < params.dark_count_probability / 4
    return int(clicks.sum() + dark.sum())


def main() -> None:
    for distance in (50.0, 100.0, 0.0):
        params = LinkParams.preset("gys", distance_km=distance)
        n = 1 << 30 if distance > 0 else 1 << 26
        progress(f"run_slots {n} slots at {distance:g} km")
        sim = LinkSimulator(params, seed=1)
        events = []

        def run():
            chunk = sim.run_slots(n)
            events.append(chunk.channels.size)

        t = best_time(run, repeat=3)
        emit(BENCH, figure="run_slots", protocol="bb84_decoy", distance_km=distance,
             clock_hz=params.clock_hz, slots=n, events_per_call=events[-1],
             seconds=round(t, 4), pulses_per_s=float(f"{n / t:.4g}"),
             events_per_s=float(f"{events[-1] / t:.4g}"))

    params = LinkParams.preset("gys", distance_km=50.0)
    n = 1 << 30
    progress(f"simulate (events + sifting statistics) {n} pulses at 50 km")
    t_sim = best_time(lambda: simulate(params, n, seed=2), repeat=2)
    n_base = 10_000_000
    progress(f"numpy per-pulse baseline {n_base} pulses")
    rng = np.random.default_rng(3)
    t_base = best_time(lambda: per_pulse_numpy(params, n_base, rng), repeat=1)
    emit(BENCH, figure="simulate_vs_numpy_per_pulse", distance_km=50.0, pulses=n,
         seconds=round(t_sim, 4), pulses_per_s=float(f"{n / t_sim:.4g}"),
         baseline="numpy per-pulse draw (no dead time)", baseline_pulses=n_base,
         baseline_seconds=round(t_base, 4),
         baseline_pulses_per_s=float(f"{n_base / t_base:.4g}"),
         ratio=round((n / t_sim) / (n_base / t_base), 1))


if __name__ == "__main__":
    main()
