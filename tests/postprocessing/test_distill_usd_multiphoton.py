"""End to end: B92 blocks simulated under the usd-multiphoton attack store no key.

The attack (security issue 13): Eve discriminates each whole pulse unambiguously, blocks the
failures and resends the identified state as an N-photon Fock state past the fibre, with N
chosen from ``theory.b92_expectation`` so that Bob's conclusive yield reaches its calibrated
value. She then knows Alice's value in the slot of ~every sifted bit (asserted below from the
simulator's ground truth), so any key distilled from such a block is known to her: ``distill``
must output none, whatever its B92 key-length rule is (it is called only through ``distill``).

The grid uses blocks of ~4e4 sifted bits; the last case is a block of 1e6 sifted bits at the
point where Eve's statistics are best (eta_Bob = 2 %, mu = 0.5, 0 km: QBER ~1.8 %, yield
~1.08 x calibration), large enough for finite-size terms not to hide a rule that credits her.
"""

from __future__ import annotations

import numpy as np

from postprocessing.randomness import ProtocolRandom
import pytest

from postprocessing import distill as dist
from sim_backend.link import LinkSimulator
from sim_backend.params import LinkParams
from sim_backend.physics import theory

pytestmark = pytest.mark.slow

MAX_RESEND_PHOTONS = 12


def honest_link(eta_bob: float, mu: float, km: float) -> LinkParams:
    # a well-aligned short link, as B92 needs (the node's B92 tests use the same optics)
    return LinkParams.preset("gys", protocol="b92", detector_efficiency=eta_bob, mu=mu,
                             distance_km=km, misalignment=0.002)


def eve_for(honest: LinkParams) -> LinkParams:
    """The fewest resent photons (past the fibre) giving at least the calibrated yield."""
    target = theory.b92_expectation(honest).conclusive_per_pulse
    for n in range(1, MAX_RESEND_PHOTONS + 1):
        p = honest.replace(eve="usd-multiphoton", eve_fraction=1.0, eve_resend_photons=n,
                           eve_bypass_fibre=True)
        if theory.b92_expectation(p).conclusive_per_pulse >= target:
            return p
    raise AssertionError("no resend photon number reaches the calibrated yield")


def distill_attacked_block(honest: LinkParams, sifted_target: float, seed: int):
    attack = eve_for(honest)
    calibrated = theory.b92_expectation(honest).conclusive_per_pulse   # the node's calibration
    n_pulses = int(sifted_target / theory.b92_expectation(attack).conclusive_per_pulse)
    sim = LinkSimulator(attack, seed=seed)
    chunk = sim.run_slots(n_pulses)
    det = chunk.channels < 4
    slots, channels = chunk.true_slots[det], chunk.channels[det]
    res = dist.distill(protocol="b92", slots=slots, channels=channels,
                       alice_pattern=sim.alice_pattern, n_pulses=n_pulses,
                       rng=ProtocolRandom.deterministic_for_tests(seed + 1),
                       expected_conclusive_per_pulse=calibrated)
    # The block is one the node's monitors pass: its yield reaches the calibration (up to
    # 5 binomial sigma, ~2.5 % at 4e4 bits), and Eve knows Alice's value in >= 99 % of the
    # slots Bob's detectors fired in.
    assert res.stats.sifted_bits >= calibrated * n_pulses - 5 * np.sqrt(calibrated * n_pulses)
    known = np.isin(np.unique(slots), chunk.eve_slots).mean()
    assert known >= 0.99
    return res


GRID = [(eta, mu, km) for eta in (0.045, 0.02) for mu in (0.1, 0.5) for km in (0.0, 2.0, 9.0)]


@pytest.mark.parametrize("eta_bob, mu, km", GRID)
def test_no_b92_key_under_usd_multiphoton(eta_bob, mu, km):
    res = distill_attacked_block(honest_link(eta_bob, mu, km), 4e4, seed=int(1000 * km + 97))
    assert res.stats.key_length == 0
    assert res.alice_key.size == 0 and res.bob_key.size == 0


def test_no_b92_key_under_usd_multiphoton_from_a_large_block():
    res = distill_attacked_block(honest_link(0.02, 0.5, 0.0), 1.0e6, seed=5)
    assert res.stats.sifted_bits > 9e5
    assert res.stats.key_length == 0, (
        f"distill granted {res.stats.key_length} key bits to a block whose every bit the "
        f"eavesdropper knows")
    assert res.alice_key.size == 0 and res.bob_key.size == 0
