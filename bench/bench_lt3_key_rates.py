"""Secret key per pulse: LT3 (loss-tolerant three-state, finite_key_lt) against decoy BB84
(Lim et al. 2014, the baseline), both measured on the same simulated link in the same run.

Per distance, each protocol's link is simulated for ``SIM_PULSES`` pulses and sifted by the
node's own sifting roles; the count tables are then evaluated by each protocol's bound at the
simulated block size and at larger blocks, the measured per-pulse counts scaled to that size
(``scaled`` true: an extrapolation of the same counts, not a longer simulation). leak_EC is
f h(QBER) per key bit with f = 1.1 (Cascade's measured efficiency, docs/security.md), not a run
of Cascade. Both protocols use the same source (mu 0.3, nu 0.1, vacuum), probabilities (0.6,
0.2, 0.2), Alice's Z probability 0.7 and the same receiver; BB84's X states are D and A.
One JSON line per (distance, protocol, block size).
"""

from __future__ import annotations

import numpy as np

from bench.common import emit
from postprocessing import finite_key as fk
from postprocessing import finite_key_lt as fkl
from postprocessing.estimation import decoy_statistics
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting import alice_answer_bb84, bob_announce_bb84, bob_apply_answer
from postprocessing.sifting import lt3 as slt3
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams

BENCH = "bench_lt3_key_rates"
SIM_PULSES = 20_000_000
BLOCKS = (SIM_PULSES, 10**10, 10**12)
DISTANCES_KM = (2.0, 10.0, 25.0, 50.0)
LINK = dict(detector_efficiency=0.6, misalignment=0.01, dark_count_probability=1e-7,
            p_basis_x=0.3, mu=0.3, nu1=0.1, p_signal=0.6, p_decoy1=0.2, dead_time_ns=0.0,
            jitter_ps=10.0)
EPS_SEC, EPS_COR, F_EC = 1e-10, 1e-15, 1.1


def _events(protocol: str, distance_km: float, seed: int):
    params = LinkParams.preset("gys", protocol=protocol, distance_km=distance_km, **LINK)
    sim = LinkSimulator(params, seed=seed)
    chunk = sim.run_slots(SIM_PULSES)
    det = chunk.channels < 4
    return params, sim, chunk.true_slots[det], chunk.channels[det]


def _scale(values, factor):
    return [round(v * factor) for v in values]


def lt3_rows(distance_km: float, seed: int):
    params, sim, slots, channels = _events("lt3", distance_km, seed)
    rng = ProtocolRandom.deterministic_for_tests(seed)
    ann, bob = slt3.bob_announce_lt3(slots, channels, rng, SIM_PULSES)
    answer, alice = slt3.alice_answer_lt3(ann, sim.alice_pattern(ann.slots))
    bob_rows = slt3.bob_apply_answer_lt3(answer, bob, SIM_PULSES)
    qber = float(np.mean(alice.key_bits != bob_rows.key_bits)) if alice.key_bits.size else 0.5
    px = params.p_basis_x
    setup = fkl.Lt3Setup(params.intensities, params.intensity_probabilities,
                         ((1 - px) / 2, (1 - px) / 2, px))
    c = alice.counts
    for n in BLOCKS:
        f = n / SIM_PULSES
        counts = fkl.Lt3Counts([[_scale(r, f) for r in d] for d in c.x_clicks],
                               _scale(c.key_clicks, f), _scale(c.z_clicks_x0, f), n)
        leak = F_EC * counts.key_clicks[0] * fk.binary_entropy(qber)
        r = fkl.lt3_key_length_result(counts, setup, eps_sec=EPS_SEC, eps_cor=EPS_COR,
                                      leak_ec=leak)
        emit(BENCH, protocol="lt3", distance_km=distance_km, block_pulses=n,
             scaled=n != SIM_PULSES, key_bits=r.key_length, key_per_pulse=r.key_length / n,
             key_qber=qber, phase_error_upper=r.terms["phase_error_rate_upper"])


def bb84_rows(distance_km: float, seed: int):
    params, sim, slots, channels = _events("bb84", distance_km, seed)
    rng = ProtocolRandom.deterministic_for_tests(seed)
    ann, bob = bob_announce_bb84(slots, channels, rng)
    answer, alice = alice_answer_bb84(ann, sim.alice_pattern(ann.slots))
    bob_sifted = bob_apply_answer(answer, bob)
    st = decoy_statistics(alice.bits, bob_sifted.bits, alice.basis, alice.intensity)
    args = st.lim_arguments()
    n_key = sum(args["n_x"])
    qber = sum(args["m_x"]) / n_key if n_key else 0.5
    for n in BLOCKS:
        f = n / SIM_PULSES
        leak = F_EC * n_key * f * fk.binary_entropy(qber)
        r = fk.decoy_key_length_result(
            n_x=_scale(args["n_x"], f), n_z=_scale(args["n_z"], f), m_z=_scale(args["m_z"], f),
            intensities=params.intensities, probabilities=params.intensity_probabilities,
            eps_sec=EPS_SEC, eps_cor=EPS_COR, leak_ec=leak)
        emit(BENCH, protocol="bb84-decoy", distance_km=distance_km, block_pulses=n,
             scaled=n != SIM_PULSES, key_bits=r.key_length, key_per_pulse=r.key_length / n,
             key_qber=qber, phase_error_upper=r.terms["phi_x"])


def main() -> None:
    for i, d in enumerate(DISTANCES_KM):
        bb84_rows(d, 100 + i)
        lt3_rows(d, 200 + i)


if __name__ == "__main__":
    main()
