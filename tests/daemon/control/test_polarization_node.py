"""The GP loop in the configuration a node runs: one reference, the twist steered on X QBER.

``ControlSupervisor.for_node`` builds the loop from the link's devices (the GP driver over TCP
to the simulated synthesizer); Alice's reference light stays H all run (her board cannot be
asked for another); each 1 s window is a block whose per-basis stats reach
``block_finished`` one window after it ends. Drift, windows and sample sizes as in
``test_polarization_drift`` (sigma = 0.0316 rad/sqrt(s), 600 windows of 5e5 pulses, about
1 100 sifted bits per basis: far fewer than a real block, so the noise terms are pessimistic).

The floor is measured in the same test: the same link with neither drift nor loop (the
analytic ``expected_link`` figure sits about 1e-3 below what the simulator's samples show, as
large as the statistical tolerance).
"""

import math

import numpy as np
import pytest

from daemon.control.polarization import GpConfig, twist_dither_for
from daemon.control.settings import ControlSettings
from sim_backend.params import LinkParams

from tests.daemon.control.drift import run_node_gp

SIGMA = 0.0316
WINDOW_S = 1.0
N_WINDOWS = 600
SAMPLE = 500_000
LATENCY = 1                      # a block's stats arrive one window after it ends
PARAMS = LinkParams.preset("gys", distance_km=10.0, polarization_drift_rad_per_sqrt_s=SIGMA)
STILL = PARAMS.replace(polarization_drift_rad_per_sqrt_s=0.0)
V = 1 - 2 * PARAMS.misalignment


def twist_margin(cfg: GpConfig, x_bits_per_window: float, qber: float) -> float:
    """X-basis excess QBER the twist steering may keep (small angles).

    The X basis sees V (w1^2 + w3^2) / 4: w1 the twist about H, w3 the part of H's tilt that
    the polarimeter lock leaves (< sigma^2 T_w in a window). A dither phase lasts 1 + LATENCY
    windows (the block in collection when a twist is applied is not used), a cycle two phases:
    T_c = 2 (1 + LATENCY) T_w, over which the twist drifts D = sigma^2 T_c rad^2. An update
    removes a fraction g = f V of the twist's offset (slope taken at curvature 1/4, true V / 4),
    so the offset settles at D / (2g - g^2), plus D/2 of growth within the cycle. The slope
    from two blocks carries noise: q+ - q- has sigma sqrt(2) sigma_Q, sigma_Q = sqrt(Q (1-Q) /
    N_x), and a step is f (q+ - q-) / d, adding (f sqrt(2) sigma_Q / d)^2 per update, settling
    likewise. The dither itself keeps the twist d away from the centre in every block: d^2.
    d is the loop's own choice for blocks of this size (``twist_dither_for``).
    """
    f, d = cfg.twist_fraction, twist_dither_for(cfg, qber, round(x_bits_per_window))
    g = f * V
    shrink = 2 * g - g * g
    t_cycle = 2 * (1 + LATENCY) * WINDOW_S
    drift = SIGMA ** 2 * t_cycle
    sigma_q = math.sqrt(qber * (1 - qber) / x_bits_per_window)
    step_noise = f * math.sqrt(2) * sigma_q / d
    twist = drift / shrink + drift / 2 + step_noise ** 2 / shrink + d * d
    return V * (twist + SIGMA ** 2 * WINDOW_S) / 4


def z_margin(cfg: GpConfig) -> float:
    """Z-basis excess: H's tilt; every excursion ends on H and a tilt past the threshold t is
    re-locked, so a window starts within t of H and the sample drifts little: V (t^2 +
    sigma^2 T_w) / 4."""
    t = math.radians(cfg.reissue_threshold_deg)
    return V * (t * t + SIGMA ** 2 * WINDOW_S) / 4


def _basis(run_, basis: str, windows=slice(None)) -> tuple[float, int]:
    ws = run_.windows[windows]
    bits = sum(getattr(w, f"sifted_{basis}") for w in ws)
    return sum(getattr(w, f"errors_{basis}") for w in ws) / bits, bits


@pytest.mark.slow
def test_node_gp_loop_holds_both_bases_with_one_reference_and_without_it_they_leave():
    settings = ControlSettings(polarization_period_s=WINDOW_S)
    cfg = GpConfig(references=((1.0, 0.0, 0.0),),
                   reissue_threshold_deg=settings.reissue_threshold_deg,
                   twist_dither_rad=settings.twist_dither_rad,
                   twist_dither_min_rad=settings.twist_dither_min_rad)
    assert cfg.twists                                   # what the supervisor builds (below)
    on = run_node_gp(PARAMS, True, N_WINDOWS, WINDOW_S, SAMPLE, seed=12, settings=settings,
                     latency_blocks=LATENCY)
    off = run_node_gp(PARAMS, False, N_WINDOWS, WINDOW_S, SAMPLE, seed=12)
    still = run_node_gp(STILL, False, N_WINDOWS, WINDOW_S, SAMPLE, seed=13)
    loop = on.status["loops"]["alice-bob.polarization"]
    assert loop["references"] == 1 and loop["twist_updates"] > N_WINDOWS // 5
    x_bits = float(np.mean([w.sifted_x for w in on.windows]))
    margins = {"z": z_margin(cfg), "x": twist_margin(cfg, x_bits, _basis(still, "x")[0])}
    assert 2e-3 < margins["x"] < 8e-3 and margins["z"] < 1e-3     # the derivation's size
    for basis, margin in margins.items():
        floor, floor_bits = _basis(still, basis)
        q_on, bits = _basis(on, basis)
        # 4 sigma of the difference of two run means (on and floor), each sqrt(Q / bits).
        stat = 4 * math.sqrt(floor / bits + floor / floor_bits)
        assert q_on < floor + margin + stat, (basis, q_on, floor, margin, stat)
        # Late in the run too (the loop does not merely start well): the last 100 windows.
        q_late, late_bits = _basis(on, basis, slice(-100, None))
        assert q_late < floor + margin + 4 * math.sqrt(floor / late_bits + floor / floor_bits)
        # Off, each basis' alignment decays as exp(-sigma^2 t): the run's mean excess is
        # V (1 - mean exp(-sigma^2 t)) / 2 ~ 0.12, many margins away.
        q_off, _ = _basis(off, basis)
        assert q_off > floor + 10 * (margin + stat), (basis, q_off, floor, margin)
    assert "control.alice-bob.polarization.x_basis_drift" not in on.alarms_seen
    assert not on.alarms_seen


@pytest.mark.slow
def test_node_gp_loop_with_twist_steering_off_holds_z_only_and_says_so():
    settings = ControlSettings(polarization_period_s=WINDOW_S, steer_twist=False)
    on = run_node_gp(PARAMS, True, N_WINDOWS, WINDOW_S, SAMPLE, seed=12, settings=settings,
                     latency_blocks=LATENCY)
    still = run_node_gp(STILL, False, N_WINDOWS, WINDOW_S, SAMPLE, seed=13)
    cfg = GpConfig(references=((1.0, 0.0, 0.0),), steer_twist=False)
    floor_z, floor_bits = _basis(still, "z")
    q_z, bits = _basis(on, "z")
    assert q_z < floor_z + z_margin(cfg) + 4 * math.sqrt(floor_z / bits + floor_z / floor_bits)
    # The twist about H goes unseen: the X basis follows the fibre and the loop says so.
    assert "control.alice-bob.polarization.x_basis_drift" in on.alarms_seen
