"""The simulated quantum link: Alice's pulses through fibre (and Eve) to Bob's time tagger.

``LinkSimulator.run_slots`` continues one run chunk by chunk and returns Bob's detection events
in Bob's clock, exactly as a time tagger would report them (contract in
``sim_backend.pattern``): int64 ``timestamps_ps`` sorted ascending
and uint8 ``channels`` (0-3 detectors H, V, D, A; 7 sync). Each chunk reads one snapshot of the
shared ``LinkControls`` (device settings) at its start and writes detector telemetry back at
its end; the fibre's polarization drifts between chunks.

Per slot the physics is exact for independent pulses: Poisson photon number of the slot's
intensity, Poisson splitting over the four detectors by the Stokes vector Bob receives (net
rotation, misalignment, passive 50/50 basis choice), plus independent dark counts; then a
sequential pass applies each detector's dead time and afterpulsing. Sampling is event driven
(``physics.sampling``), so the cost follows the clicks.

``simulate`` runs a whole batch and sifts it the way the node would (squashing double clicks
to one random outcome) to give gains, QBER and, for B92, the conclusive fraction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from firmware_protocol.wire_facts import N_DETECTORS, PATTERN_INTENSITY_SHIFT, SYNC_CHANNEL
from sim_backend.controls import LinkControls
from sim_backend.params import LinkParams, ParameterError
from sim_backend.pattern import pattern_at, sync_slots
from sim_backend.physics import channel, detectors, eve, sampling, source

BLINDING_PHOTOCURRENT_UA = 40.0
"""Photocurrent a fully blinded detector reports (illustrative: tens of uA vs 10 nA dark)."""
BLINDING_BIAS_DROP = 0.3
"""Relative bias drop of a fully blinded detector (bright light through the bias resistor)."""
IDLE_PHOTOCURRENT_UA = 0.01


@dataclass
class SlotChunk:
    """Bob's events for slots [first_slot, first_slot + n_slots), in Bob's clock."""

    first_slot: int
    n_slots: int
    timestamps_ps: np.ndarray   # int64, ascending
    channels: np.ndarray        # uint8: 0 H, 1 V, 2 D, 3 A, 7 sync
    true_slots: np.ndarray      # int64: Alice's slot of each event (ground truth, tests only)
    eve_slots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """int64 ascending: slots where Eve's light made a detector click; she knows Alice's value
    there (ground truth, tests only; dead time may still have swallowed the click)."""


@dataclass(frozen=True)
class _Snapshot:
    net_rotation: np.ndarray
    channel_open: bool
    enabled: np.ndarray
    efficiency_pct: np.ndarray
    dead_time_ns: np.ndarray
    bias_v: np.ndarray


@dataclass(frozen=True)
class _ClickTables:
    p_max: float
    outcome_cum: np.ndarray     # float64[16, 5]
    detector_cum: np.ndarray    # float64[16, 5, 4]
    mean_detected: np.ndarray   # float64[16]
    eve_kind: int               # 1 Fock state, 2 bright faked state, 3 coherent pulse
    bright_mask: np.ndarray     # uint8[5]
    eve_photons: int            # photons of Eve's Fock state (kind 1)
    eve_mean: float             # mean photons of Eve's coherent pulse (kind 3)
    eve_detect: np.ndarray      # float64[5]: P(one of Eve's photons is detected) per outcome
    dark_per_detector: np.ndarray  # float64[4]


def _cumulative_weights(w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=-1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    cum = np.cumsum(w / safe, axis=-1)
    cum[..., -1] = 1.0
    return cum


class LinkSimulator:
    """One simulated link run, continued chunk by chunk (seedable and reproducible).

    Without ``controls`` the simulator keeps its own, with every detector at the nominal
    efficiency setting and the link's ``dead_time_ns``; with shared controls the devices'
    settings rule (efficiency relative to ``NOMINAL_EFFICIENCY_PCT``, their dead time).
    """

    def __init__(self, params: LinkParams, controls: LinkControls | None = None,
                 *, seed: int | None = None) -> None:
        if not isinstance(params, LinkParams):
            raise TypeError(f"params must be LinkParams, not {type(params).__name__}")
        self.params = params
        if controls is None:
            controls = LinkControls()
            for det in controls.detectors:
                det.dead_time_ns = params.dead_time_ns
        self.controls = controls
        self._rng = np.random.default_rng(seed)
        self.pattern_key = int(self._rng.integers(0, 2**63))
        self.sync_key = int(self._rng.integers(0, 2**63))
        self._kernel_state = np.array([self._rng.integers(0, 2**63)], dtype=np.uint64)
        self.next_slot = 0
        self._dead_until = np.zeros(N_DETECTORS, dtype=np.int64)
        self._pending_afterpulse = np.zeros((N_DETECTORS, sampling.AFTERPULSE_QUEUE), np.int64)
        self._n_pending = np.zeros(N_DETECTORS, dtype=np.int64)
        self._slot_ps = params.slot_ps * (1.0 + params.clock_drift_ppm * 1e-6)

    @property
    def elapsed_s(self) -> float:
        return self.next_slot / self.params.clock_hz

    def alice_pattern(self, slots: np.ndarray) -> np.ndarray:
        p = self.params
        return pattern_at(self.pattern_key, np.asarray(slots), p_basis_x=p.p_basis_x,
                          p_signal=p.p_signal, p_decoy1=p.p_decoy1)

    def bob_time_ps(self, slots: np.ndarray) -> np.ndarray:
        """Bob's clock reading (without jitter) for Alice's slots: float64 ps."""
        return self.params.clock_offset_ps + np.asarray(slots, dtype=np.float64) * self._slot_ps

    def run_slots(self, n_slots: int) -> SlotChunk:
        """Continue the run over slots [next_slot, next_slot + n_slots): Bob's events.

        Events are sorted by timestamp within the chunk; with a jitter comparable to a slot,
        the first events of a chunk may precede the last of the previous one. Dead time and
        pending afterpulses carry over between chunks; the fibre drifts after each chunk.
        """
        if isinstance(n_slots, bool) or not isinstance(n_slots, (int, np.integer)) or n_slots <= 0:
            raise ParameterError(f"n_slots = {n_slots!r} must be a positive integer")
        n_slots = int(n_slots)
        first, stop = self.next_slot, self.next_slot + n_slots
        snap = self._snapshot()
        tables = self._click_tables(snap)
        state = self._kernel_state

        cand = sampling.bernoulli_slots(first, stop, tables.p_max, state)
        cand_pattern = self.alice_pattern(cand)
        ph_slots = np.empty(4 * cand.size, dtype=np.int64)
        ph_dets = np.empty(4 * cand.size, dtype=np.uint8)
        ph_eve = np.empty(4 * cand.size, dtype=np.uint8)
        n_ph = sampling.photon_clicks(cand, cand_pattern, tables.p_max, tables.outcome_cum,
                                      tables.detector_cum, tables.mean_detected, tables.eve_kind,
                                      tables.bright_mask, np.int64(tables.eve_photons),
                                      float(tables.eve_mean), tables.eve_detect, state,
                                      ph_slots, ph_dets, ph_eve)
        eve_slots = np.unique(ph_slots[:n_ph][ph_eve[:n_ph] != 0])
        raw_slots, raw_dets = self._add_dark_counts(ph_slots[:n_ph], ph_dets[:n_ph], first, stop,
                                                    tables.dark_per_detector, state)

        dead = np.array([detectors.dead_slots(t, self.params.clock_hz)
                         for t in snap.dead_time_ns], dtype=np.int64)
        p = self.params
        ap_mean_slots = float(p.afterpulse_time_constant_ns * 1e-9 * p.clock_hz)
        ap_prob = float(p.afterpulse_probability)
        # Afterpulses cascade to about n/(1 - P) clicks: 20 % headroom, doubled if short.
        cap = int(raw_slots.size / (1.0 - ap_prob) * 1.2 + 64 * (1 + 8 / (1 - ap_prob)))
        while True:
            dead_until = self._dead_until.copy()
            pending = self._pending_afterpulse.copy()
            n_pending = np.where(snap.enabled, self._n_pending, 0)   # a disabled one is mute
            st = state.copy()
            out_slots = np.empty(cap, dtype=np.int64)
            out_dets = np.empty(cap, dtype=np.uint8)
            n = sampling.dead_time_afterpulse(raw_slots, raw_dets, np.int64(stop), dead, ap_prob,
                                              ap_mean_slots, dead_until, pending, n_pending,
                                              st, out_slots, out_dets)
            if n >= 0:
                break
            cap *= 2
        state[:] = st
        self._dead_until, self._pending_afterpulse = dead_until, pending
        self._n_pending = n_pending
        click_slots, click_dets = out_slots[:n], out_dets[:n]

        sync = sync_slots(self.sync_key, first, stop, p.sync_period)
        all_slots = np.concatenate([click_slots, sync])
        all_channels = np.concatenate([click_dets, np.full(sync.size, SYNC_CHANNEL, np.uint8)])
        t = self.bob_time_ps(all_slots)
        if p.jitter_ps > 0:
            t += self._rng.normal(0.0, p.jitter_ps, t.size)
        ts = np.rint(t).astype(np.int64)
        order = np.argsort(ts, kind="stable")

        self._write_back(snap, click_dets, n_slots)
        self.next_slot = stop
        return SlotChunk(first, n_slots, ts[order], all_channels[order], all_slots[order],
                         eve_slots)

    # -- per-chunk physics -------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        c = self.controls
        with c.lock:
            dets = c.detectors
            return _Snapshot(
                net_rotation=np.array(c.controller_rotation @ c.fibre_rotation, dtype=float),
                channel_open=c.switch_port == c.link_port,
                enabled=np.array([d.enabled for d in dets], dtype=bool),
                efficiency_pct=np.array([d.efficiency_pct for d in dets], dtype=float),
                dead_time_ns=np.array([d.dead_time_ns for d in dets], dtype=float),
                bias_v=np.array([d.bias_v for d in dets], dtype=float))

    def _click_tables(self, snap: _Snapshot) -> _ClickTables:
        p = self.params
        eta_ch = p.channel_transmittance if snap.channel_open else 0.0
        eta_det = detectors.detector_efficiencies(p.detector_efficiency, p.efficiency_mismatch,
                                                  snap.efficiency_pct, snap.enabled)
        rot = snap.net_rotation
        alice = source.prepared_stokes(p.protocol)                        # (16, 3)
        mean_n = source.mean_photon_numbers(p.intensities)                # (16,)
        q_alice = detectors.port_probabilities(alice @ rot.T, p.misalignment)
        m = mean_n[:, None] * eta_ch * eta_det[None, :] * q_alice         # (16, 4)
        mean_detected = m.sum(axis=1)

        f = p.eve_fraction if p.eve_active else 0.0
        outcome = np.zeros((16, 5))
        outcome[:, 0] = (1.0 - f) * -np.expm1(-mean_detected)
        det_w = np.zeros((16, 5, 4))
        det_w[:, 0, :] = m
        eve_kind = 2 if p.eve == "blinding" else (3 if p.eve_resend_mu > 0 else 1)
        bright_mask = np.zeros(5, dtype=np.uint8)
        eve_detect = np.zeros(5)
        resend_at_bob = source.BB84_STATES @ rot.T                        # (4, 3)
        if f > 0.0:
            attack = eve.attack_probabilities(p.eve, alice, mean_n,
                                              protocol=p.protocol)         # (16, 4)
            if eve_kind != 2:
                # Eve's light: through the fibre, or (bypass) straight into Bob's receiver
                # -- unless the switch has taken the receiver off the link.
                eta_eve = (1.0 if p.eve_bypass_fibre else p.channel_transmittance) \
                    if snap.channel_open else 0.0
                pi = eta_eve * eta_det[None, :] * detectors.port_probabilities(
                    resend_at_bob, p.misalignment)                        # (4 resent, 4 det)
                eve_detect[1:] = pi.sum(axis=1)
                if eve_kind == 3:
                    clicks = -np.expm1(-p.eve_resend_mu * eve_detect[1:])
                else:
                    clicks = -np.expm1(p.eve_resend_photons * np.log1p(-np.minimum(
                        eve_detect[1:], 1.0 - 1e-300)))
                outcome[:, 1:] = f * attack * clicks[None, :]
                det_w[:, 1:, :] = pi[None, :, :]
            else:
                bright_mask[1:] = detectors.blinded_click_mask(resend_at_bob, p.misalignment,
                                                               snap.enabled)
                fire = eve.blinding_fire_probability(p.transmittance) if snap.channel_open else 0.0
                outcome[:, 1:] = f * fire * attack * (bright_mask[1:] != 0)[None, :]
        outcome_cum = np.cumsum(outcome, axis=1)
        dark = detectors.detector_dark_probability(p.dark_count_probability)
        blinded = f if (p.eve == "blinding" and snap.channel_open) else 0.0
        dark_per_detector = np.where(snap.enabled, dark * (1.0 - blinded), 0.0)
        return _ClickTables(p_max=float(min(1.0, outcome_cum[:, 4].max())),
                            outcome_cum=np.ascontiguousarray(outcome_cum),
                            detector_cum=np.ascontiguousarray(_cumulative_weights(det_w)),
                            mean_detected=mean_detected, eve_kind=eve_kind,
                            bright_mask=bright_mask, eve_photons=p.eve_resend_photons,
                            eve_mean=p.eve_resend_mu, eve_detect=eve_detect,
                            dark_per_detector=dark_per_detector)

    @staticmethod
    def _add_dark_counts(slots: np.ndarray, dets: np.ndarray, first: int, stop: int,
                         dark: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [sampling.bernoulli_slots(first, stop, float(d), state) for d in dark]
        n_dark = sum(x.size for x in parts)
        if n_dark == 0:
            return slots, dets
        d_slots = np.concatenate(parts)
        d_dets = np.concatenate([np.full(x.size, k, np.uint8) for k, x in enumerate(parts)])
        order = np.argsort(d_slots, kind="stable")
        d_slots, d_dets = d_slots[order], d_dets[order]
        at = np.searchsorted(slots, d_slots, side="right")
        return np.insert(slots, at, d_slots), np.insert(dets, at, d_dets)

    def _write_back(self, snap: _Snapshot, click_dets: np.ndarray, n_slots: int) -> None:
        p = self.params
        counts = np.bincount(click_dets, minlength=N_DETECTORS)
        blinded = (p.eve_fraction if p.eve == "blinding" and snap.channel_open else 0.0)
        drift = channel.drift_step(self._rng, p.polarization_drift_rad_per_sqrt_s,
                                   n_slots / p.clock_hz)
        c = self.controls
        with c.lock:
            for k, tel in enumerate(c.telemetry):
                tel.counts += int(counts[k])
                lit = blinded if snap.enabled[k] else 0.0
                tel.photocurrent_ua = IDLE_PHOTOCURRENT_UA + BLINDING_PHOTOCURRENT_UA * lit
                tel.bias_v = float(snap.bias_v[k]) * (1.0 - BLINDING_BIAS_DROP * lit)
            if p.polarization_drift_rad_per_sqrt_s > 0:
                c.fibre_rotation = channel.reorthonormalize(drift @ c.fibre_rotation)


# -- batch runs and the statistics a node would compute ----------------------------------------

@dataclass
class IntensityStats:
    pulses: float = 0.0        # expected count n * p_k (Alice knows it; see SimResult)
    detections: int = 0
    sifted: int = 0
    errors: int = 0

    @property
    def gain(self) -> float:
        return self.detections / self.pulses if self.pulses else float("nan")

    @property
    def error_rate(self) -> float:
        return self.errors / self.sifted if self.sifted else float("nan")


@dataclass
class SimResult:
    """Outcome of ``simulate``: counts, the figures derived from them, optionally the events.

    Per-intensity pulse counts are the expected n * p_k rather than a count over every slot
    (which would cost a pattern evaluation per pulse); their relative spread, about
    sqrt((1 - p_k) / (n p_k)), is a factor sqrt(Q) below that of the click counts.
    """

    params: LinkParams
    pulses: int
    detections: int = 0           # slots with at least one click
    clicks: int = 0               # detector events (sync excluded)
    double_clicks: int = 0        # slots where two or more detectors clicked
    sifted_bits: int = 0          # BB84: Bob's basis = Alice's; B92: conclusive
    errors: int = 0
    eve_known_sifted: int = 0     # sifted bits in slots where Eve's light clicked (ground truth)
    sync_events: int = 0
    wall_time_s: float = 0.0
    per_intensity: list[IntensityStats] = field(default_factory=lambda: [IntensityStats()
                                                                        for _ in range(3)])
    timestamps_ps: np.ndarray | None = None
    channels: np.ndarray | None = None
    true_slots: np.ndarray | None = None
    eve_slots: np.ndarray | None = None

    @property
    def detection_probability(self) -> float:
        return self.detections / self.pulses

    @property
    def qber(self) -> float:
        return self.errors / self.sifted_bits if self.sifted_bits else float("nan")

    @property
    def conclusive_fraction(self) -> float | None:
        if self.params.protocol != "b92":
            return None
        return self.sifted_bits / self.detections if self.detections else float("nan")

    @property
    def gains(self) -> tuple[float, float, float]:
        return tuple(s.gain for s in self.per_intensity)

    @property
    def error_rates(self) -> tuple[float, float, float]:
        return tuple(s.error_rate for s in self.per_intensity)

    def to_dict(self) -> dict:
        names = ("signal", "decoy1", "decoy2")
        out = {
            "pulses": self.pulses, "detections": self.detections, "clicks": self.clicks,
            "detection_probability": self.detection_probability,
            "sifted_bits": self.sifted_bits, "errors": self.errors, "qber": self.qber,
            "double_clicks": self.double_clicks, "sync_events": self.sync_events,
            "wall_time_s": self.wall_time_s,
        }
        if self.params.eve_active:
            out["eve_known_sifted"] = self.eve_known_sifted
        if self.params.protocol == "b92":
            out["conclusive_fraction"] = self.conclusive_fraction
        out["intensities"] = {
            name: {"mean_photon_number": mu, "pulses": s.pulses, "detections": s.detections,
                   "gain": s.gain, "sifted": s.sifted, "errors": s.errors,
                   "error_rate": s.error_rate}
            for name, mu, s, prob in zip(names, self.params.intensities, self.per_intensity,
                                         self.params.intensity_probabilities) if prob > 0}
        return out


def bob_outcomes(true_slots: np.ndarray, channels: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per detected slot: (slot, detector Bob reports, number of detectors that clicked).

    Double clicks are squashed as the sifting stage does (``postprocessing.sifting``): both
    detectors of one analyser give that analyser and a random bit; clicks in both analysers
    give a random analyser and a random bit. Sync events are ignored.
    """
    keep = channels < N_DETECTORS
    slots = true_slots[keep]
    ch = channels[keep].astype(np.int64)
    order = np.argsort(slots, kind="stable")
    slots, ch = slots[order], ch[order]
    if slots.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
    mask = np.bitwise_or.reduceat(1 << ch, starts)
    n_clicked = np.diff(np.r_[starts, slots.size])
    plus, cross = mask & 3, (mask >> 2) & 3
    coin = rng.integers(0, 2, (2, mask.size))
    analyser = np.where((plus > 0) & (cross > 0), coin[0], np.where(plus > 0, 0, 1))
    single = (mask & (mask - 1)) == 0
    port = np.where(single, np.where(analyser == 0, plus, cross) >> 1, coin[1])
    return slots[starts], 2 * analyser + port, n_clicked


def _accumulate(result: SimResult, sim: LinkSimulator, chunk: SlotChunk,
                rng: np.random.Generator) -> None:
    result.clicks += int(np.count_nonzero(chunk.channels < N_DETECTORS))
    result.sync_events += int(np.count_nonzero(chunk.channels == SYNC_CHANNEL))
    slots, det, n_clicked = bob_outcomes(chunk.true_slots, chunk.channels, rng)
    if slots.size == 0:
        return
    pat = sim.alice_pattern(slots)
    intensity = (pat >> PATTERN_INTENSITY_SHIFT).astype(np.int64)
    value = pat & 1
    analyser, port = det >> 1, det & 1
    if sim.params.protocol == "b92":
        sifted = port == 1                         # V -> bit 1, A -> bit 0
        bob_bit = (analyser == 0).astype(np.uint8)
    elif sim.params.protocol == "lt3":
        sifted = (analyser == 0) & (((pat >> 1) & 1) == 0)   # key rows: Z state, Z detector
        bob_bit = port.astype(np.uint8)
    else:
        sifted = analyser == ((pat >> 1) & 1)
        bob_bit = port.astype(np.uint8)
    error = sifted & (bob_bit != value)
    known = np.isin(slots, chunk.eve_slots, assume_unique=True)
    result.eve_known_sifted += int(np.count_nonzero(sifted & known))
    result.detections += int(slots.size)
    result.double_clicks += int(np.count_nonzero(n_clicked >= 2))
    result.sifted_bits += int(np.count_nonzero(sifted))
    result.errors += int(np.count_nonzero(error))
    det_by = np.bincount(intensity, minlength=4)
    sift_by = np.bincount(intensity, weights=sifted, minlength=4)
    err_by = np.bincount(intensity, weights=error, minlength=4)
    for k in range(3):
        s = result.per_intensity[k]
        s.detections += int(det_by[k])
        s.sifted += int(sift_by[k])
        s.errors += int(err_by[k])


DEFAULT_CHUNK_SLOTS = 1 << 26


def simulate(params: LinkParams, n_pulses: int, seed: int | None = None,
             controls: LinkControls | None = None, *, keep_events: bool = False,
             chunk_slots: int = DEFAULT_CHUNK_SLOTS,
             progress: Callable[[int, int], None] | None = None) -> SimResult:
    """Run ``n_pulses`` slots of a fresh link and sift them; ``keep_events`` keeps Bob's events.

    With shared ``controls`` the detector settings there apply (their dead time included);
    without, the link parameters do.
    """
    if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) or n_pulses <= 0:
        raise ParameterError(f"n_pulses = {n_pulses!r} must be a positive integer")
    if chunk_slots <= 0:
        raise ParameterError(f"chunk_slots = {chunk_slots!r} must be a positive integer")
    n_pulses = int(n_pulses)
    t0 = time.perf_counter()
    sim = LinkSimulator(params, controls, seed=seed)
    stats_rng = np.random.default_rng(None if seed is None else [seed, 1])
    result = SimResult(params=params, pulses=n_pulses)
    for k, prob in enumerate(params.intensity_probabilities):
        result.per_intensity[k].pulses = n_pulses * prob
    kept: list[SlotChunk] = []
    done = 0
    while done < n_pulses:
        n = min(chunk_slots, n_pulses - done)
        chunk = sim.run_slots(n)
        _accumulate(result, sim, chunk, stats_rng)
        if keep_events:
            kept.append(chunk)
        done += n
        if progress is not None:
            progress(done, n_pulses)
    if keep_events:
        result.timestamps_ps = np.concatenate([c.timestamps_ps for c in kept])
        result.channels = np.concatenate([c.channels for c in kept])
        result.true_slots = np.concatenate([c.true_slots for c in kept])
        result.eve_slots = np.concatenate([c.eve_slots for c in kept])
    result.wall_time_s = time.perf_counter() - t0
    return result
