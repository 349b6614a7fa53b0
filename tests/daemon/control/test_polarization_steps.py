"""Pure steps of the two polarization loops: telemetry in, action out, no device."""

import math

import pytest

from daemon.control.common import ControlConfigError, QberWindow
from daemon.control.polarization import (D_REF, H_REF, GpConfig, GpLoop, OzConfig, OzLoop,
                                         SetSop, SetVoltages, SopReading, angle_deg,
                                         twist_dither_for, twist_excursion)

ONE_REF = dict(references=(H_REF,))


def test_angle_between_stokes_directions():
    assert angle_deg((1, 0, 0), (0, 1, 0)) == pytest.approx(90.0)
    assert angle_deg((1, 0, 0), (2, 0, 0)) == pytest.approx(0.0)
    assert angle_deg((1, 0, 0), (-1, 0, 0)) == pytest.approx(180.0)


def test_gp_issues_target_first_then_only_on_drift_or_interval():
    loop = GpLoop(GpConfig(reissue_threshold_deg=2.0, reissue_interval_s=60.0, **ONE_REF))
    st, act = loop.step(loop.initial_state(), SopReading(0.0, (1.0, 0.0, 0.0)))
    assert act == SetSop((1.0, 0.0, 0.0))
    small = (math.cos(math.radians(1)), math.sin(math.radians(1)), 0.0)
    st, act = loop.step(st, SopReading(1.0, small))
    assert act is None and st.error_deg == pytest.approx(1.0)
    big = (math.cos(math.radians(3)), math.sin(math.radians(3)), 0.0)
    st, act = loop.step(st, SopReading(2.0, big))
    assert act == SetSop((1.0, 0.0, 0.0))
    st, act = loop.step(st, SopReading(30.0, (1.0, 0.0, 0.0)))
    assert act is None
    st, act = loop.step(st, SopReading(62.0, (1.0, 0.0, 0.0)))   # no visible drift, yet
    assert act is not None and st.reissues == 3                  # re-issued at the interval


def test_gp_alarms_when_reissues_do_not_lock():
    loop = GpLoop(GpConfig(lock_tolerance_deg=5.0, max_unlocked_steps=3, **ONE_REF))
    st = loop.initial_state()
    off = (0.0, 1.0, 0.0)                                         # 90 deg off, every time
    for k in range(4):
        st, act = loop.step(st, SopReading(float(k), off))
        assert act is not None
    assert "not_locking" in loop.status(st)["alarms"] and st.mode == "unlocked"
    st, _ = loop.step(st, SopReading(5.0, (1.0, 0.0, 0.0)))
    assert "not_locking" not in loop.status(st)["alarms"] and st.mode == "locked"


def test_gp_no_light_means_no_action():
    loop = GpLoop()
    st, act = loop.step(loop.initial_state(), SopReading(0.0, (0.1, 0.0, 0.0)))
    assert act is None and "no_reference_light" in loop.status(st)["alarms"]


def test_gp_reports_x_basis_twist():
    loop = GpLoop(GpConfig(x_basis_alarm_excess=0.02, min_sifted=1000, **ONE_REF))
    q = QberWindow(0, 1, 4000, 300, 2000, 60, 2000, 240)          # Z 3 %, X 12 %
    st, _ = loop.step(loop.initial_state(), SopReading(1.0, (1.0, 0.0, 0.0), q))
    assert "x_basis_drift" in loop.status(st)["alarms"]
    q_few = QberWindow(0, 1, 400, 30, 200, 6, 200, 24)            # too few bits to judge
    st, _ = loop.step(loop.initial_state(), SopReading(1.0, (1.0, 0.0, 0.0), q_few))
    assert "x_basis_drift" not in loop.status(st)["alarms"]


def test_gp_two_references_in_turn_each_locked_to_itself():
    loop = GpLoop(GpConfig(reissue_threshold_deg=2.0, reissue_interval_s=60.0))
    st = loop.initial_state()
    assert st.reference == 0
    st, act = loop.step(st, SopReading(0.0, H_REF))               # first turn: issue H
    assert act == SetSop(H_REF, next_reference=1) and st.reference == 1
    st, act = loop.step(st, SopReading(1.0, D_REF))               # first turn: issue D
    assert act == SetSop(D_REF, next_reference=0) and st.reference == 0
    small = (math.cos(math.radians(1)), math.sin(math.radians(1)), 0.0)
    st, act = loop.step(st, SopReading(2.0, small))               # H within threshold
    assert act == SetSop(None, next_reference=1) and st.reissues == 2
    tilted_d = (math.sin(math.radians(3)), math.cos(math.radians(3)), 0.0)
    st, act = loop.step(st, SopReading(3.0, tilted_d))            # D 3 deg off: re-issued
    assert act == SetSop(D_REF, next_reference=0) and st.error_deg == pytest.approx(3.0)
    assert st.last_issue_s == (0.0, 3.0)


def test_gp_two_references_lock_check_is_per_reference():
    loop = GpLoop(GpConfig(lock_tolerance_deg=5.0, max_unlocked_steps=2))
    st = loop.initial_state()
    far = (0.0, 0.0, 1.0)                                         # 90 deg from both
    for k in range(4):                                            # H, D, H, D: each twice
        st, _ = loop.step(st, SopReading(float(k), far))
    assert "not_locking" in loop.status(st)["alarms"]
    assert loop.status(st)["references"] == 2


@pytest.mark.parametrize("field,value,match", [
    ("reissue_threshold_deg", -1.0, "reissue_threshold_deg"),
    ("references", ((1.0, 1.0, 0.0),), "references"),
    ("references", (H_REF, (-1.0, 0.0, 0.0)), "non-orthogonal"),
    ("references", (H_REF, D_REF, (0.0, 0.0, 1.0)), "one or two"),
    ("max_unlocked_steps", 0, "max_unlocked_steps")])
def test_gp_config_errors_name_the_value(field, value, match):
    with pytest.raises(ControlConfigError, match=match):
        GpConfig(**{field: value})


def _window(t, qber, n=10_000):
    return QberWindow(t, t + 1.0, n, int(round(qber * n)))


def test_oz_dithers_plus_then_minus_then_moves_down_the_slope():
    cfg = OzConfig(dither_mv=50.0)
    loop = OzLoop(cfg)
    st = loop.initial_state((0, 1000, 0, -1000))
    st, act = loop.step(st, _window(0.0, 0.05))
    assert act == SetVoltages((50, 1000, 0, -1000)) and st.phase == "plus"
    st, act = loop.step(st, _window(1.0, 0.06))                   # QBER at +dither
    assert act == SetVoltages((-50, 1000, 0, -1000)) and st.phase == "minus"
    st, act = loop.step(st, _window(2.0, 0.04))                   # QBER at -dither: lower
    slope = (0.06 - 0.04) / (2 * 50.0)
    expected = max(-cfg.max_step_mv, -cfg.gain_mv2 * slope)
    assert st.center_mv[0] == pytest.approx(expected)             # moved towards lower QBER
    assert expected < 0 and st.channel == 1
    assert act.voltages_mv[1] == 1050                             # next channel's +dither


def test_oz_newton_step_lands_on_a_quadratic_minimum():
    """For Q = Q0 + a (v - v*)^2 with the curvature the gain assumes, a full Newton step
    (fraction 1) from any v reaches v* in one cycle: slope = 2 a (v - v*)."""
    cfg = OzConfig(newton_fraction=1.0, max_step_mv=2000.0, dither_mv=50.0,
                   min_voltage_mv=-20000, max_voltage_mv=20000)
    a = (math.pi / cfg.v_pi_mv) ** 2 / 8
    v_star = 321.0
    loop = OzLoop(cfg)
    st = loop.initial_state((0, 0, 0, 0))
    st, act = loop.step(st, _window(0.0, 0.1))
    q = lambda v: 0.03 + a * (v - v_star) ** 2
    st, act = loop.step(st, QberWindow(1, 2, 10 ** 9, round(q(act.voltages_mv[0]) * 1e9)))
    st, act = loop.step(st, QberWindow(2, 3, 10 ** 9, round(q(act.voltages_mv[0]) * 1e9)))
    assert st.center_mv[0] == pytest.approx(v_star, abs=0.5)


def test_oz_ignores_windows_from_before_the_last_action():
    loop = OzLoop()
    st, act = loop.step(loop.initial_state(), _window(0.0, 0.05))
    st = loop.applied(st, 1.5)
    same, none = loop.step(st, _window(1.0, 0.5))                 # began at 1.0 < 1.5
    assert none is None and same == st


def test_oz_skips_thin_windows_and_alarms_after_several():
    loop = OzLoop(OzConfig(min_sifted=1000, max_empty_windows=3))
    st = loop.initial_state()
    for k in range(3):
        st, act = loop.step(st, QberWindow(k, k + 1, 10, 1))
        assert act is None
    assert "no_qber_data" in loop.status(st)["alarms"]
    st, act = loop.step(st, _window(5.0, 0.03))
    assert act is not None and "no_qber_data" not in loop.status(st)["alarms"]


def test_oz_wraps_a_squeezer_by_two_half_wave_voltages():
    cfg = OzConfig()
    loop = OzLoop(cfg)
    st = loop.initial_state((4800, 0, 0, 0))
    st, _ = loop.step(st, _window(0.0, 0.05))
    st, _ = loop.step(st, _window(1.0, 0.04))
    st, _ = loop.step(st, _window(2.0, 0.05))                     # pushes channel 1 upwards
    assert st.center_mv[0] < 4800 - cfg.wrap_mv + cfg.max_step_mv + 1
    assert st.wraps == 1


def test_oz_qber_alarm_on_smoothed_value():
    loop = OzLoop(OzConfig(qber_alarm=0.08, smoothing=1.0))
    st, _ = loop.step(loop.initial_state(), _window(0.0, 0.12))
    assert "qber_high" in loop.status(st)["alarms"]
    st, _ = loop.step(st, _window(1.0, 0.03))
    assert "qber_high" not in loop.status(st)["alarms"]


def test_oz_config_refuses_a_range_too_small_to_wrap():
    with pytest.raises(ControlConfigError, match="voltage range"):
        OzConfig(min_voltage_mv=-1000, max_voltage_mv=1000)


# -- one reference: the twist about it steered on the X-basis QBER ----------------------------

def _x_window(t0, t1, qber_x, bits=4000):
    """A block whose X basis (and Z basis, at 1 %) holds ``bits`` sifted bits."""
    return QberWindow(t0, t1, 2 * bits, round(0.01 * bits) + round(qber_x * bits),
                      bits, round(0.01 * bits), bits, round(qber_x * bits))


@pytest.mark.parametrize("reference", [H_REF, (0.6, 0.0, 0.8), (0.0, 1.0, 0.0)])
@pytest.mark.parametrize("twist", [0.05, -0.3, 1.2])
def test_twist_excursion_is_a_rotation_about_the_reference_by_the_twist(reference, twist):
    """Three shortest-rotation locks, reference -> a -> b -> reference (the synthesizer's own
    move, as the simulator models it), compose to a right-handed rotation about the reference
    by exactly the requested angle."""
    import numpy as np
    from sim_backend.instruments.polarization_rotations import rotation_about, rotation_taking
    r = np.array(reference, float)
    a, b = (np.array(w) for w in twist_excursion(reference, twist))
    net = rotation_taking(b, r) @ rotation_taking(a, b) @ rotation_taking(r, a)
    assert np.allclose(net, rotation_about(r, twist), atol=1e-9)


def test_twist_excursion_refuses_a_quarter_turn_or_more():
    with pytest.raises(ControlConfigError, match="pi/2"):
        twist_excursion(H_REF, math.pi / 2)


def test_gp_twist_dithers_plus_then_minus_then_moves_down_the_slope():
    # the dither pinned at 0.08 (smallest = largest): the cycle's arithmetic alone
    cfg = GpConfig(twist_dither_rad=0.08, twist_dither_min_rad=0.08, twist_fraction=0.5,
                   **ONE_REF)
    loop, d, on_h = GpLoop(cfg), 0.08, (1.0, 0.0, 0.0)
    st, act = loop.step(loop.initial_state(), SopReading(1.0, on_h, _x_window(0.0, 1.0, 0.05)))
    assert act.twist_rad == pytest.approx(d) and len(act.via) == 2 and act.target == H_REF
    assert st.twist_phase == "plus"
    st = loop.applied(st, 1.01)
    st, act = loop.step(st, SopReading(2.0, on_h, _x_window(0.5, 1.5, 0.2)))   # begun before
    assert act is None and st.twist_phase == "plus"
    st, act = loop.step(st, SopReading(2.5, on_h, _x_window(1.5, 2.5, 0.04)))  # q+ = 4 %
    assert act.twist_rad == pytest.approx(-2 * d) and st.twist_phase == "minus"
    st, act = loop.step(st, SopReading(2.6, on_h, _x_window(1.5, 2.5, 0.04)))  # used once
    assert act is None
    st, act = loop.step(st, SopReading(3.5, on_h, _x_window(2.5, 3.5, 0.06)))  # q- = 6 %
    # Lower on the + side: move up by f (q- - q+) / d = 0.5 x 0.02 / 0.08 = 0.125 rad, then
    # dither + again: the request goes from centre - d to centre + 0.125 + d.
    assert act.twist_rad == pytest.approx(0.125 + 2 * d)
    assert st.twist_rad == pytest.approx(0.125 + d) and st.twist_updates == 1
    assert "twist" in loop.status(st)["last_action"]


def test_gp_twist_newton_step_lands_on_a_quadratic_minimum():
    """X QBER q0 + (w - w*)^2 / 4 (visibility 1): with the full Newton step one cycle puts
    the centre on w*, whatever the start."""
    best, d = 0.2, 0.08
    loop = GpLoop(GpConfig(twist_fraction=1.0, twist_dither_rad=d, **ONE_REF))
    st, t = loop.initial_state(), 0.0

    def q(w):
        return 0.02 + (w - best) ** 2 / 4
    centre = 0.0
    for _ in range(3):                       # start (+d), plus (-2d), minus (update, +d)
        offset = st.twist_rad - centre if st.twist_phase != "start" else 0.0
        qx = q(centre + offset)
        st, act = loop.step(st, SopReading(t + 1, H_REF, _x_window(t, t + 1, qx, 10 ** 8)))
        t += 1
    # the next cycle's +d' is sized from 10^8 X bits: the smallest dither
    assert st.twist_dither_now == GpConfig().twist_dither_min_rad
    assert st.twist_rad - st.twist_dither_now == pytest.approx(best, abs=1e-6)


def test_gp_twist_dither_is_sized_from_the_blocks_statistics():
    """d = 1.5 (2 f^2 Q (1 - Q) / (N (2 f - f^2)))^(1/4) between the configured bounds; a cycle keeps
    its d for both of its blocks and the next one starts from centre - d to centre' + d'."""
    cfg = GpConfig(twist_fraction=0.5, **ONE_REF)
    f, q, n = 0.5, 0.03, 20_000
    expect = 1.5 * (2 * f * f * q * (1 - q) / n / (2 * f - f * f)) ** 0.25
    assert cfg.twist_dither_min_rad < expect < cfg.twist_dither_rad
    assert twist_dither_for(cfg, q, n) == pytest.approx(expect, rel=1e-12)
    assert twist_dither_for(cfg, q, 10) == cfg.twist_dither_rad          # thin: the largest
    assert twist_dither_for(cfg, q, 10 ** 9) == cfg.twist_dither_min_rad  # thick: the smallest
    loop, on_h = GpLoop(cfg), (1.0, 0.0, 0.0)
    st, act = loop.step(loop.initial_state(), SopReading(1.0, on_h, _x_window(0, 1, q, 1000)))
    d1 = st.twist_dither_now
    assert d1 == pytest.approx(twist_dither_for(cfg, q, 1000)) and act.twist_rad == \
        pytest.approx(d1)
    st, act = loop.step(st, SopReading(2.0, on_h, _x_window(1, 2, q, n)))      # q+
    assert act.twist_rad == pytest.approx(-2 * d1) and st.twist_dither_now == d1
    st, act = loop.step(st, SopReading(3.0, on_h, _x_window(2, 3, q, n)))      # q- = q+
    d2 = twist_dither_for(cfg, round(q * n) / n, n)
    assert st.twist_dither_now == pytest.approx(d2) and d2 < d1
    assert act.twist_rad == pytest.approx(d1 + d2)          # no slope: no move, only d + d'
    assert loop.status(st)["twist_dither_rad"] == pytest.approx(d2)


def test_gp_twist_skips_thin_blocks_and_is_off_when_asked_or_with_two_references():
    loop = GpLoop(GpConfig(min_sifted=1000, **ONE_REF))
    st, act = loop.step(loop.initial_state(),
                        SopReading(1.0, H_REF, _x_window(0.0, 1.0, 0.05, bits=500)))
    assert act == SetSop(H_REF) and st.twist_phase == "start"     # first lock only
    off = GpLoop(GpConfig(steer_twist=False, **ONE_REF))
    _, act = off.step(off.initial_state(), SopReading(1.0, H_REF, _x_window(0.0, 1.0, 0.05)))
    assert act == SetSop(H_REF) and not off.config.twists
    two = GpLoop(GpConfig())
    _, act = two.step(two.initial_state(), SopReading(1.0, H_REF, _x_window(0.0, 1.0, 0.05)))
    assert act.via == () and act.twist_rad is None and not two.config.twists
