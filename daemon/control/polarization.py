"""Polarization drift compensation at Bob: two dialects, two pure loops.

The fibre's birefringence wanders, so the states Alice prepares arrive rotated on the Poincare
sphere and the QBER climbs. Bob's controller undoes the rotation.

``GpLoop`` (General Photonics synthesizer, ``drivers.polarization.gp_scpi``): the unit locks the
reference light to a target once per ``:CONT:SOP`` and then lets the fibre drift, so the loop
re-issues the target whenever the polarimeter shows the state has strayed (and at least every
``reissue_interval_s``). One reference fixes two of the three rotation angles: a twist about
its axis is invisible to the polarimeter and shows only as the other basis' QBER.

A node has one reference: Alice's board launches its reference light in one state (H) and
nothing in the firmware lets Bob ask for another. So the loop locks H on the polarimeter (the
two angles across H, which hold the Z basis) and steers the twist about H on the X-basis QBER
of finished blocks, the way the OZ loop steers on QBER: a synchronous dither of +-d about the
present twist, one block at each sign, the finite-difference slope, and a fraction of the
Newton step (X-basis excess V w^2 / 4 for a twist w: curvature V / 4, taken as 1/4). The
synthesizer only locks the reference to a target, by the shortest move from where it is, so a
twist is made as a closed excursion H -> a -> b -> H: legs of length e from H along two
perpendicular directions u and H x u. Each lock is a rotation taking one point to the next,
the three compose to a rotation that maps H to itself, i.e. a twist about H, by the solid
angle the path encloses (the spherical excess of the right triangle with legs e:
tan(E/2) = tan^2(e/2)); visiting a and b in the other order twists the other way. The excursion
ends on H, so it also re-locks the Z basis. The loop needs only that an excursion twists the
same way each time and the sign of the QBER slope, not the exact angle: a unit whose moves are
not the shortest gives another gain, which the dither measures anew every cycle.

With two references configured (the simulator can switch Alice's reference light in-process,
``select_reference``), the loop locks H and D in turn instead, each to itself: in small angles,
locking H removes the components of the residual rotation across H, locking D next removes
those across D, which include the one along H, so both bases stay near the floor. Whatever the
mode, an X-basis QBER standing above the Z-basis one raises ``x_basis_drift``.

``OzLoop`` (OZ Optics EPC, four fibre squeezers, no polarimeter): a synchronous dither on the
QBER. For one squeezer at a time it measures a window at +dither and one at -dither around the
current voltage, takes the finite-difference slope and moves the voltage by a fraction of the
Newton step (the QBER is quadratic in a small residual rotation: an error rotation by theta
about a Stokes axis n adds V theta^2 (1 + n3^2) / 8 averaged over both bases). A squeezer near
the end of its range is moved by two half-wave voltages (a 2 pi retardance: the same rotation),
so the search never runs out of range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from daemon.control.common import ControlConfigError, QberWindow, check_range, loop_status

Stokes = tuple[float, float, float]


def _unit(v) -> Stokes:
    n = math.sqrt(sum(float(c) ** 2 for c in v))
    return (float(v[0]) / n, float(v[1]) / n, float(v[2]) / n)


def angle_deg(a, b) -> float:
    """Angle between two Stokes directions on the Poincare sphere, degrees."""
    ua, ub = _unit(a), _unit(b)
    dot = sum(x * y for x, y in zip(ua, ub))
    return math.degrees(math.acos(max(-1.0, min(1.0, dot))))


# -- GP dialect: steer on the measured SOP --------------------------------------------------------

@dataclass(frozen=True)
class SopReading:
    """One polarimeter reading (``:MEAS:SOP?``), optionally with the QBER of the last window."""

    t_s: float
    measured: Stokes          # not normalised: its length is the degree of polarization
    qber: QberWindow | None = None


@dataclass(frozen=True)
class SetSop:
    """Lock the reference being measured to each of ``via`` in turn and then to ``target``
    (None: leave the controller as it is), then ask Alice for reference number
    ``next_reference`` (None: one reference, no change). ``via`` is a twist excursion of
    ``twist_rad`` about the reference."""

    target: Stokes | None
    next_reference: int | None = None
    via: tuple[Stokes, ...] = ()
    twist_rad: float | None = None

    def describe(self) -> str:
        parts = [] if self.target is None else \
            ["set SOP {:.4f},{:.4f},{:.4f}".format(*self.target)]
        if self.twist_rad is not None:
            parts.append(f"twist {self.twist_rad:+.4f} rad via {len(self.via)} waypoints")
        if self.next_reference is not None:
            parts.append(f"reference {self.next_reference}")
        return ", ".join(parts)


def twist_excursion(reference, twist_rad: float) -> tuple[Stokes, Stokes]:
    """Two waypoints: locking ``reference`` to the first, then the second, then back to itself
    (each by the shortest rotation) twists the sphere by ``twist_rad`` about ``reference``
    (right-handed). Legs e from the reference along u and along reference x u enclose a right
    triangle of spherical excess E, tan(E/2) = tan^2(e/2); |twist| must stay below pi/2."""
    r = _unit(reference)
    if not abs(twist_rad) < math.pi / 2:
        raise ControlConfigError(f"twist {twist_rad!r} rad: one excursion makes less than "
                                 f"pi/2")
    helper = (0.0, 1.0, 0.0) if abs(r[1]) < 0.9 else (0.0, 0.0, 1.0)
    dot = sum(x * y for x, y in zip(helper, r))
    u = _unit(tuple(h - dot * x for h, x in zip(helper, r)))
    v = (r[1] * u[2] - r[2] * u[1], r[2] * u[0] - r[0] * u[2], r[0] * u[1] - r[1] * u[0])
    leg = 2.0 * math.atan(math.sqrt(math.tan(abs(twist_rad) / 2.0)))
    a = tuple(math.cos(leg) * x + math.sin(leg) * y for x, y in zip(r, u))
    b = tuple(math.cos(leg) * x + math.sin(leg) * y for x, y in zip(r, v))
    return (a, b) if twist_rad >= 0 else (b, a)


H_REF: Stokes = (1.0, 0.0, 0.0)
D_REF: Stokes = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class GpConfig:
    references: tuple[Stokes, ...] = (H_REF, D_REF)   # locked in turn, each to itself
    reissue_threshold_deg: float = 2.0    # re-issue once the measured state strays this far
    reissue_interval_s: float = 60.0      # and at least this often (per reference)
    lock_tolerance_deg: float = 5.0       # a fresh re-issue must bring the error below this
    max_unlocked_steps: int = 3           # ... or after this many tries: alarm not_locking
    min_degree_of_polarization: float = 0.5   # below: no reference light, nothing to steer on
    x_basis_alarm_excess: float = 0.02    # X-basis QBER above the Z-basis one by this: alarm
    min_sifted: int = 1000                # per basis, before a block's QBER is used
    # One reference: steer the twist about it on the X-basis QBER (module docstring).
    steer_twist: bool = True
    twist_dither_rad: float = 0.08        # largest +-d about the present twist, one block each
    twist_dither_min_rad: float = 0.02    # smallest (a controller's resolution, not statistics)
    twist_fraction: float = 0.5           # of the Newton step at curvature 1/4 per rad^2
    twist_max_step_rad: float = 0.3       # largest move of the twist per dither cycle

    def __post_init__(self):
        refs = self.references
        if not isinstance(refs, tuple) or not 1 <= len(refs) <= 2:
            raise ControlConfigError(f"references = {refs!r}: give one or two Stokes vectors")
        for ref in refs:
            if len(ref) != 3 or abs(math.sqrt(sum(c * c for c in ref)) - 1) > 0.05:
                raise ControlConfigError(f"references: {ref!r} is not a unit Stokes vector "
                                         f"(3 components, length 1 +- 0.05)")
        if len(refs) == 2 and not 10.0 <= angle_deg(*refs) <= 170.0:
            raise ControlConfigError(f"references = {refs!r}: two references must be "
                                     f"non-orthogonal states (10..170 deg apart on the sphere) "
                                     f"to fix the whole rotation")
        check_range("reissue_threshold_deg", self.reissue_threshold_deg, 0.0, 90.0, "deg")
        check_range("reissue_interval_s", self.reissue_interval_s, 0.0, 86400.0, "s")
        check_range("lock_tolerance_deg", self.lock_tolerance_deg, 0.0, 180.0, "deg")
        check_range("max_unlocked_steps", self.max_unlocked_steps, 1, 1000)
        check_range("min_degree_of_polarization", self.min_degree_of_polarization, 0.0, 1.0)
        check_range("x_basis_alarm_excess", self.x_basis_alarm_excess, 0.0, 0.5)
        check_range("min_sifted", self.min_sifted, 1, 1e12)
        if not isinstance(self.steer_twist, bool):
            raise ControlConfigError(f"steer_twist = {self.steer_twist!r}: expected True or "
                                     f"False")
        check_range("twist_dither_rad", self.twist_dither_rad, 0.001, 0.5, "rad")
        check_range("twist_dither_min_rad", self.twist_dither_min_rad, 0.001,
                    self.twist_dither_rad, "rad")
        check_range("twist_fraction", self.twist_fraction, 0.01, 1.0)
        check_range("twist_max_step_rad", self.twist_max_step_rad, 0.001, 0.5, "rad")
        # These ranges keep the largest excursion, max step + 2 dither <= 1.5 rad, below the
        # pi/2 one excursion can make.

    @property
    def twists(self) -> bool:
        """The twist about a single reference is steered on the X-basis QBER."""
        return self.steer_twist and len(self.references) == 1


@dataclass(frozen=True)
class GpState:
    mode: str = "starting"                # starting | locked | unlocked | no_light
    reference: int = 0                    # the reference the next reading measures
    last_issue_s: tuple[float | None, ...] = (None, None)   # per reference
    issued: tuple[bool, ...] = (False, False)   # per reference: re-issued at its last turn
    error_deg: float | None = None
    reissues: int = 0
    unlocked_steps: int = 0
    last_action: str | None = None
    alarms: tuple[tuple[str, str], ...] = ()
    # twist steering (one reference)
    twist_phase: str = "start"            # start | plus | minus
    twist_rad: float = 0.0                # the twist applied so far, dither included
    twist_q_plus: float = math.nan
    twist_dither_now: float = math.nan   # this cycle's d (twist_dither_for)
    twist_pending_since_s: float = -math.inf   # blocks begun before this are not charged
    twist_used_until_s: float = -math.inf      # each block is used once
    twist_updates: int = 0


DITHER_MARGIN = 1.5


def twist_dither_for(config: GpConfig, qber_x: float, sifted_x: int) -> float:
    """The dither for the next cycle, from the block that ends the last one.

    The dither keeps each block d away from the best twist (d^2 of the squared offset), and
    the slope taken from two blocks adds (f sqrt(2) sigma_Q / d)^2 / (2g - g^2) once settled
    (g = f at visibility 1; sigma_Q^2 = Q (1 - Q) / N_x). Their sum is least at
    d^4 = 2 f^2 sigma_Q^2 / (2g - g^2). That optimum of the mean square is taken 1.5 times
    (``DITHER_MARGIN``): where the noise term dominates (thin blocks), single noisy steps
    otherwise push a window's X-basis excess past the drift alarm; the slope noise's share
    falls to 0.44 for 2.25 times the dither's. A node's block of 10^6-10^7 X bits still lands
    below the smallest d, against the fixed 0.08 rad that cost ~9 % of the key at 10 km; the
    smallest d stands for what a real controller resolves."""
    c = config
    f = c.twist_fraction
    q = min(max(float(qber_x), 1e-4), 0.5)
    var = q * (1.0 - q) / max(int(sifted_x), 1)
    d = DITHER_MARGIN * (2.0 * f * f * var / (2.0 * f - f * f)) ** 0.25
    return min(c.twist_dither_rad, max(c.twist_dither_min_rad, d))


class GpLoop:
    """Re-issue each reference's target when the polarimeter shows drift, references in turn
    (pure; see module docstring). A reading measures reference ``state.reference``."""

    def __init__(self, config: GpConfig | None = None):
        self.config = config or GpConfig()

    def initial_state(self) -> GpState:
        n = len(self.config.references)
        return GpState(last_issue_s=(None,) * n, issued=(False,) * n)

    @staticmethod
    def applied(state: GpState, t_s: float) -> GpState:
        """The last twist took effect at ``t_s``: only blocks begun from then on are used."""
        return dataclasses.replace(state, twist_pending_since_s=float(t_s))

    def _twist(self, state: GpState, q: QberWindow | None) -> tuple[dict, float | None]:
        """The twist to apply now, from one fresh block's X-basis QBER (or none)."""
        c = self.config
        if (not c.twists or q is None or q.t0_s < state.twist_pending_since_s
                or q.t1_s <= state.twist_used_until_s or (q.sifted_x or 0) < c.min_sifted):
            return {}, None
        d = state.twist_dither_now
        upd = dict(twist_used_until_s=q.t1_s, twist_pending_since_s=q.t1_s)
        if state.twist_phase == "start":
            nxt = twist_dither_for(c, q.qber_x, q.sifted_x)
            request = nxt
            upd.update(twist_phase="plus", twist_dither_now=nxt)
        elif state.twist_phase == "plus":
            request = -2.0 * d
            upd.update(twist_phase="minus", twist_q_plus=q.qber_x)
        else:
            # q(w) = q0 + w^2 / 4 about the best twist: q(+d) - q(-d) = d x (offset of the
            # present centre), so the Newton step is -(q+ - q-) / d.
            slope_step = -(state.twist_q_plus - q.qber_x) / d
            move = max(-c.twist_max_step_rad,
                       min(c.twist_max_step_rad, c.twist_fraction * slope_step))
            nxt = twist_dither_for(c, q.qber_x, q.sifted_x)
            request = move + d + nxt          # from centre - d to the new centre + d'
            upd.update(twist_phase="plus", twist_updates=state.twist_updates + 1,
                       twist_dither_now=nxt)
        upd["twist_rad"] = state.twist_rad + request
        return upd, request

    def step(self, state: GpState, reading: SopReading) -> tuple[GpState, SetSop | None]:
        c = self.config
        n = len(c.references)
        i = state.reference % n
        alarms: dict[str, str] = {}
        dop = math.sqrt(sum(float(x) ** 2 for x in reading.measured))
        if not dop >= c.min_degree_of_polarization:
            alarms["no_reference_light"] = (f"polarimeter degree of polarization {dop:.2f} "
                                            f"< {c.min_degree_of_polarization:g} on reference "
                                            f"{i}")
            return dataclasses.replace(state, mode="no_light", error_deg=None,
                                       alarms=tuple(alarms.items())), None
        target = tuple(float(x) for x in c.references[i])
        issued = list(state.issued) + [False] * (n - len(state.issued))
        err = angle_deg(reading.measured, target)
        unlocked = state.unlocked_steps
        if issued[i]:             # this reference's last re-issue should have held
            unlocked = unlocked + 1 if err > c.lock_tolerance_deg else 0
        if unlocked >= c.max_unlocked_steps:
            alarms["not_locking"] = (f"SOP error {err:.1f} deg after {unlocked} re-issues "
                                     f"(tolerance {c.lock_tolerance_deg:g} deg)")
        q = reading.qber
        if q is not None and min(q.sifted_z or 0, q.sifted_x or 0) >= c.min_sifted:
            excess = q.qber_x - q.qber_z
            # One window is a small sample: the excess must also stand 4 standard deviations
            # clear of zero (false alarm ~3e-5 per window when both bases are held).
            spread = math.sqrt(q.qber_x * (1 - q.qber_x) / q.sifted_x
                               + q.qber_z * (1 - q.qber_z) / q.sifted_z)
            if excess > max(c.x_basis_alarm_excess, 4 * spread):
                why = ("the second reference is not holding" if n > 1 else
                       "the twist steering is not holding it" if c.twists else
                       "twist about the reference axis, not steered (steer_twist off)")
                alarms["x_basis_drift"] = (f"X-basis QBER {q.qber_x:.2%} exceeds Z-basis "
                                           f"{q.qber_z:.2%} by more than "
                                           f"{c.x_basis_alarm_excess:.2%}: {why}")
        last = list(state.last_issue_s) + [None] * (n - len(state.last_issue_s))
        twist_update, twist = self._twist(state, q)
        due = (twist is not None or last[i] is None or err > c.reissue_threshold_deg
               or reading.t_s - last[i] >= c.reissue_interval_s)
        nxt = (i + 1) % n if n > 1 else None
        if twist is not None:        # the excursion ends on the reference: it re-locks it too
            action = SetSop(target, None, twist_excursion(target, twist), twist)
        else:
            action = SetSop(target if due else None, nxt) if (due or nxt is not None) else None
        if due:
            last[i] = reading.t_s
        issued[i] = due
        mode = "unlocked" if "not_locking" in alarms else "locked"
        new = dataclasses.replace(
            state, mode=mode, reference=i if nxt is None else nxt,
            last_issue_s=tuple(last[:n]), issued=tuple(issued[:n]), error_deg=err,
            reissues=state.reissues + (1 if due else 0), unlocked_steps=unlocked,
            last_action=action.describe() if due else state.last_action,
            alarms=tuple(alarms.items()), **twist_update)
        return new, action

    def status(self, state: GpState) -> dict:
        return loop_status(state.mode, state.last_action, dict(state.alarms),
                           sop_error_deg=state.error_deg, reissues=state.reissues,
                           references=len(self.config.references),
                           reference=state.reference,
                           twist_rad=state.twist_rad if self.config.twists else None,
                           twist_dither_rad=(None if not self.config.twists
                                             or math.isnan(state.twist_dither_now)
                                             else state.twist_dither_now),
                           twist_updates=state.twist_updates)


# -- OZ dialect: dither/gradient search on the QBER ------------------------------------------------

@dataclass(frozen=True)
class SetVoltages:
    voltages_mv: tuple[int, ...]

    def describe(self) -> str:
        return "set voltages " + ",".join(str(v) for v in self.voltages_mv) + " mV"


@dataclass(frozen=True)
class OzConfig:
    n_channels: int = 4
    min_voltage_mv: int = -5000
    max_voltage_mv: int = 5000
    v_pi_mv: float = 2000.0           # half-wave voltage of a squeezer
    dither_mv: float = 50.0
    newton_fraction: float = 0.7      # of the Newton step for the smallest curvature (V = 1)
    max_step_mv: float = 300.0
    min_sifted: int = 1000            # a window with fewer sifted bits is not used
    max_empty_windows: int = 5        # ... this many in a row: alarm no_qber_data
    qber_alarm: float = 0.08          # smoothed QBER above this: alarm qber_high
    smoothing: float = 0.1            # weight of a new window in the smoothed QBER

    def __post_init__(self):
        check_range("n_channels", self.n_channels, 1, 16)
        if not self.min_voltage_mv < self.max_voltage_mv:
            raise ControlConfigError(f"min_voltage_mv = {self.min_voltage_mv!r} must be below "
                                     f"max_voltage_mv = {self.max_voltage_mv!r}")
        check_range("v_pi_mv", self.v_pi_mv, 1.0, 1e5, "mV")
        check_range("dither_mv", self.dither_mv, 1.0, self.v_pi_mv / 2, "mV")
        check_range("newton_fraction", self.newton_fraction, 0.01, 1.0)
        check_range("max_step_mv", self.max_step_mv, 1.0, self.v_pi_mv, "mV")
        span = self.max_voltage_mv - self.min_voltage_mv
        need = self.wrap_mv + 2 * (self.dither_mv + self.max_step_mv)
        if span < need:
            raise ControlConfigError(f"voltage range {span} mV must be at least 2 V_pi + 2 "
                                     f"(dither + max step) = {need:g} mV, so that a squeezer "
                                     f"can be wrapped by a 2 pi retardance")
        check_range("min_sifted", self.min_sifted, 1, 1e12)
        check_range("max_empty_windows", self.max_empty_windows, 1, 1e6)
        check_range("qber_alarm", self.qber_alarm, 0.0, 0.5)
        check_range("smoothing", self.smoothing, 0.0, 1.0)

    @property
    def wrap_mv(self) -> float:
        """Voltage of a 2 pi retardance: moving by it leaves the squeezer's rotation unchanged."""
        return 2.0 * self.v_pi_mv

    @property
    def gain_mv2(self) -> float:
        """Step per unit QBER slope: fraction x Newton step 1 / (2a), a = (pi/V_pi)^2 / 8."""
        return self.newton_fraction * 4.0 / (math.pi / self.v_pi_mv) ** 2


@dataclass(frozen=True)
class OzState:
    center_mv: tuple[float, ...]
    channel: int = 0
    phase: str = "start"              # start | plus | minus
    q_plus: float = math.nan
    pending_since_s: float = -math.inf
    qber_smoothed: float = math.nan
    windows_used: int = 0
    empty_windows: int = 0
    wraps: int = 0
    last_action: str | None = None
    alarms: tuple[tuple[str, str], ...] = ()


class OzLoop:
    """Dither/gradient search on the QBER of successive windows (pure; see module docstring).

    Contract: a window is used only if it began at or after the moment the previous action took
    effect (``applied(state, t_s)``, or by default the end of the window that asked for it), so
    no QBER is charged to the wrong setting.
    """

    def __init__(self, config: OzConfig | None = None):
        self.config = config or OzConfig()

    def initial_state(self, voltages_mv=None) -> OzState:
        v = tuple(float(x) for x in (voltages_mv or (0,) * self.config.n_channels))
        if len(v) != self.config.n_channels:
            raise ControlConfigError(f"{len(v)} voltages given for {self.config.n_channels} "
                                     f"channels")
        return OzState(center_mv=v)

    @staticmethod
    def applied(state: OzState, t_s: float) -> OzState:
        """The last action took effect at ``t_s``: only windows from then on are used."""
        return dataclasses.replace(state, pending_since_s=float(t_s))

    def _setting(self, center: tuple[float, ...], channel: int, sign: int) -> SetVoltages:
        c = self.config
        v = list(center)
        v[channel] += sign * c.dither_mv
        return SetVoltages(tuple(int(round(min(c.max_voltage_mv, max(c.min_voltage_mv, x))))
                                 for x in v))

    def step(self, state: OzState, window: QberWindow) -> tuple[OzState, SetVoltages | None]:
        c = self.config
        if window.t0_s < state.pending_since_s:
            return state, None
        alarms = dict(state.alarms)
        if window.sifted < c.min_sifted:
            empty = state.empty_windows + 1
            if empty >= c.max_empty_windows:
                alarms["no_qber_data"] = (f"{empty} windows in a row with fewer than "
                                          f"{c.min_sifted} sifted bits: cannot steer")
            return dataclasses.replace(state, empty_windows=empty,
                                       alarms=tuple(alarms.items())), None
        alarms.pop("no_qber_data", None)
        q = window.qber
        smoothed = q if math.isnan(state.qber_smoothed) else \
            (1 - c.smoothing) * state.qber_smoothed + c.smoothing * q
        if smoothed > c.qber_alarm:
            alarms["qber_high"] = f"smoothed QBER {smoothed:.2%} above {c.qber_alarm:.2%}"
        else:
            alarms.pop("qber_high", None)
        center, channel, wraps = list(state.center_mv), state.channel, state.wraps
        q_plus = state.q_plus
        if state.phase == "start":
            phase, action = "plus", self._setting(tuple(center), channel, +1)
        elif state.phase == "plus":
            q_plus = q
            phase, action = "minus", self._setting(tuple(center), channel, -1)
        else:
            slope = (q_plus - q) / (2.0 * c.dither_mv)
            move = max(-c.max_step_mv, min(c.max_step_mv, -c.gain_mv2 * slope))
            center[channel] += move
            room = c.dither_mv + c.max_step_mv
            if center[channel] > c.max_voltage_mv - room:
                center[channel] -= c.wrap_mv
                wraps += 1
            elif center[channel] < c.min_voltage_mv + room:
                center[channel] += c.wrap_mv
                wraps += 1
            channel = (channel + 1) % c.n_channels
            phase, action = "plus", self._setting(tuple(center), channel, +1)
        new = OzState(center_mv=tuple(center), channel=channel, phase=phase, q_plus=q_plus,
                      pending_since_s=window.t1_s, qber_smoothed=smoothed,
                      windows_used=state.windows_used + 1, empty_windows=0, wraps=wraps,
                      last_action=action.describe(), alarms=tuple(alarms.items()))
        return new, action

    def status(self, state: OzState) -> dict:
        mode = "alarm" if state.alarms else ("searching" if state.windows_used else "starting")
        return loop_status(mode, state.last_action, dict(state.alarms),
                           qber_smoothed=None if math.isnan(state.qber_smoothed)
                           else state.qber_smoothed,
                           center_mv=[round(v) for v in state.center_mv], wraps=state.wraps)
