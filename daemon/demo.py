"""``qkd-node demo``: two nodes on simulated hardware, from device URLs to identical keys.

Until the link engine exists (roadmap), the demo plays both nodes in one process, but each node
touches only its own devices, through the registered drivers and the URLs that
``sim serve`` publishes — exactly what a node's config will hold. Bob streams detection events
from his board; Alice answers from her board's pattern memory for the slots Bob reports; the
postprocessing chain turns the block into keys at both ends. Keys are compared, counted and
wiped: never printed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time

import numpy as np

from drivers import registry
from drivers.errors import DeviceError
from firmware_protocol import ParamId
from firmware_protocol.sync import sync_on_bits
from postprocessing.distill import DistillInputError, distill_events
from postprocessing.randomness import ProtocolRandom

DEFAULT_DISTANCE_KM = 10.0
DEFAULT_PULSES = 2_000_000_000
B92_DISTANCE_KM = 5.0
B92_MISALIGNMENT = 0.002
B92_PULSES = 150_000_000


def _say(msg: str) -> None:
    print(msg, flush=True)


def _open_node(endpoints, node: str) -> dict:
    """Open every device of ``node`` by driver name and URL (what the daemon will do)."""
    devices = {}
    for ep in endpoints:
        if ep.node == node:
            devices[ep.device] = registry.create(ep.driver, ep.url, timeout_s=5.0)
    return devices


def _collect_block(board, n_slots: int, slot_ps: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream Bob's events until the batches cover ``n_slots`` slots (progress on stdout)."""
    times, chans = [], []
    covered_ps = 0.0
    need_ps = n_slots * slot_ps
    next_report = time.monotonic()
    board.start_acquisition()
    try:
        while covered_ps < need_ps:
            batch = board.read_events(timeout_s=30.0)
            times.append(batch.timestamps_ps)
            chans.append(batch.channels)
            covered_ps += batch.t_end_ps - batch.t_start_ps
            if time.monotonic() >= next_report:
                next_report += 1.0
                _say(f"    streamed {covered_ps / slot_ps:.3g} of {n_slots:.3g} slots, "
                     f"{sum(t.size for t in times):,} events")
    finally:
        board.stop_acquisition()
        board.queued_batches()   # events past the block are not part of it
    return np.concatenate(times), np.concatenate(chans), int(covered_ps / slot_ps)


def run_block(params, n_pulses: int, seed: int, b92_calibration: dict | None = None
              ) -> tuple[bool, list[str]]:
    """One block over simulated hardware: (both ends hold the same non-empty key, the block's
    abort reasons).

    b92_calibration: for B92, what the node knows from calibration (expected conclusive yield
    per pulse).
    """
    from sim_backend.serve import SimulatedPair  # the launcher may start the simulator

    eve = f", eavesdropper {params.eve} on {params.eve_fraction:.0%} of pulses" \
        if params.eve != "none" else ""
    flavour = "with decoys" if params.protocol == "bb84" else \
        f"(misalignment {params.misalignment:.1%})"
    _say(f"\n== {params.protocol.upper()} {flavour} over {params.distance_km:g} km of fibre "
         f"(GYS parameters){eve}")
    with SimulatedPair(params, seed=seed, realtime=False) as pair:
        endpoints = pair.endpoints()
        alice, bob = _open_node(endpoints, "alice"), _open_node(endpoints, "bob")
        try:
            a_board, b_board = alice["board"], bob["board"]
            ident = b_board.identify()
            _say(f"  Alice: board {a_board.identify().model} at {a_board.transport.url}")
            det_id = bob["detector"].identify()
            _say(f"  Bob:   board {ident.model} at {b_board.transport.url}, detector "
                 f"{det_id.model} ({det_id.serial}) at {bob['detector'].transport.url}")
            bob["switch"].select_port(1)
            det = bob["detector"]
            _say(f"  Bob's detectors: efficiency {det.efficiency_pct} %, dead time "
                 f"{det.dead_time_ns} ns; switch on port {bob['switch'].port()}")
            # Public board parameters Alice's node announces to Bob's.
            clock_hz = a_board.get_parameter(ParamId.CLOCK_HZ)
            sync_period = int(a_board.get_parameter(ParamId.SYNC_PERIOD))
            sync_key = int(a_board.get_parameter(ParamId.SYNC_KEY))
            mu, nu1, nu2 = (a_board.get_parameter(p) for p in (ParamId.MU, ParamId.NU1,
                                                                ParamId.NU2))
            p_sig, p_d1 = (a_board.get_parameter(p) for p in (ParamId.P_SIGNAL,
                                                             ParamId.P_DECOY1))
            slot_ps = 1e12 / clock_hz
            intensities = f"mu={mu:g} nu1={nu1:g} nu2={nu2:g}" if params.protocol == "bb84" \
                else f"mu={mu:g}"
            _say(f"  clock {clock_hz / 1e9:g} GHz, intensities {intensities}; collecting a "
                 f"block of {n_pulses:.3g} pulses ...")
            t0 = time.monotonic()
            timestamps, channels, covered = _collect_block(b_board, n_pulses, slot_ps)
            t1 = time.monotonic()
            _say(f"  Bob received {timestamps.size:,} events over {covered:.3g} slots "
                 f"in {t1 - t0:.1f} s; distilling ...")
            sync_bits = sync_on_bits(sync_key, 0, covered // sync_period + 2)
            if params.protocol == "bb84":
                protocol_args = dict(intensities=(mu, nu1, nu2),
                                     intensity_probabilities=(p_sig, p_d1, 1.0 - p_sig - p_d1))
            else:
                protocol_args = dict(b92_calibration)
            result = distill_events(
                timestamps_ps=timestamps, channels=channels, nominal_period_ps=slot_ps,
                sync_period=sync_period, sync_on_bits=sync_bits, protocol=params.protocol,
                alice_pattern=a_board.request_pattern, n_pulses=covered,
                rng=ProtocolRandom(), **protocol_args)
        finally:
            for dev in (*alice.values(), *bob.values()):
                dev.close()
    s = result.stats
    _say(f"  sifted {s.sifted_bits:,} bits; QBER {s.qber_estimate:.2%}; "
         f"post-processing took {sum(s.timings_s.values()):.2f} s")
    if s.cascade_disclosed_bits:
        _say(f"  Cascade disclosed {s.cascade_disclosed_bits:,} parity bits "
             f"(efficiency f = {s.reconcile_efficiency:.3f})")
    same = bool(np.array_equal(result.alice_key, result.bob_key))
    if s.aborted:
        _say(f"  block ABORTED: {', '.join(s.abort_reasons)} — no key stored, as it must be")
    else:
        _say(f"  secret key: {s.key_length:,} bits ({s.bound}, eps_sec={s.eps_sec:g}, "
             f"eps_cor={s.eps_cor:g}); identical at both ends: {'yes' if same else 'NO'}")
    ok = same and s.key_length > 0 and not s.aborted
    result.alice_key.fill(0)
    result.bob_key.fill(0)
    return ok, list(s.abort_reasons)


def main(argv: list[str] | None = None) -> int:
    from sim_backend.params import LinkParams, ParameterError

    parser = argparse.ArgumentParser(prog="qkd-node demo",
                                     description="two QKD nodes on simulated hardware")
    parser.add_argument("--distance-km", type=float, default=DEFAULT_DISTANCE_KM)
    parser.add_argument("--pulses", type=float, default=DEFAULT_PULSES,
                        help="pulses per block (default 2e9: enough for a finite-key decoy bound)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not 1e6 <= args.pulses <= 2e10:
        print(f"qkd-node demo: error: pulses = {args.pulses:g} is outside [1e6, 2e10]",
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else secrets.randbits(63)
    try:
        honest = LinkParams.preset("gys", distance_km=args.distance_km)
        attacked = LinkParams.preset("gys", distance_km=args.distance_km,
                                     eve="intercept-resend", eve_fraction=1.0)
    except ParameterError as exc:
        print(f"qkd-node demo: error: {exc}", file=sys.stderr)
        return 2
    _say("qkd-node demo: simulated hardware on loopback, drivers by URL, numba post-processing")
    try:
        ok = run_block(honest, int(args.pulses), seed)[0]
        caught = not run_block(attacked, int(args.pulses) // 4, seed + 1)[0]
        b92_ok, b92_caught = _b92_scenes(seed + 2)
    except (DeviceError, DistillInputError) as exc:
        print(f"qkd-node demo: error: {exc}", file=sys.stderr)
        return 1
    _say(f"\nBB84: key agreed without Eve: {'yes' if ok else 'no'}; intercept-resend "
         f"detected: {'yes' if caught else 'no'}.  B92 (no security proof with laser pulses: "
         f"never a key source): honest block stopped only for that: "
         f"{'yes' if b92_ok else 'no'}; unambiguous-discrimination attack detected: "
         f"{'yes' if b92_caught else 'no'}")
    return 0 if ok and caught and b92_ok and b92_caught else 1


def _b92_scenes(seed: int) -> tuple[bool, bool]:
    """B92, the freight design's protocol: no published proof covers it with weak coherent
    pulses (see finite_key), so it runs for eavesdropper detection only: an honest block stops
    with no_security_proof alone; a USD attack also shows as a drop of the conclusive yield."""
    from sim_backend.params import LinkParams
    from sim_backend.physics import theory

    honest = LinkParams.preset("gys", protocol="b92", distance_km=B92_DISTANCE_KM,
                               misalignment=B92_MISALIGNMENT)
    expected = theory.expected_link(honest)   # stands in for the node's calibration run
    calibration = dict(
        expected_conclusive_per_pulse=expected.detection_probability
        * expected.conclusive_fraction)
    _, reasons = run_block(honest, B92_PULSES, seed, calibration)
    ok = reasons == ["no_security_proof"]
    _, reasons = run_block(honest.replace(eve="usd", eve_fraction=1.0), B92_PULSES // 4,
                           seed + 1, calibration)
    caught = "conclusive_yield_drop" in reasons
    return ok, caught
