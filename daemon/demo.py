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
import contextlib
import pathlib
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from drivers import registry
from drivers.errors import DeviceError
from firmware_protocol import ParamId
from firmware_protocol.sync import sync_on_bits
from postprocessing.distill import DistillInputError, distill_events
from postprocessing.finite_key import B92_QBER_CEILING
from postprocessing.randomness import ProtocolRandom

DEFAULT_DISTANCE_KM = 10.0
DEFAULT_PULSES = 2_000_000_000
MIN_PULSES, MAX_PULSES = 1e6, 2e10
B92_DISTANCE_KM = 5.0
B92_MISALIGNMENT = 0.002
B92_PULSES = 150_000_000
QBER_THRESHOLD = 0.11           # the abort threshold on the finite-size QBER upper bound
SEEDS_PER_RUN = 4               # scenes run with seed, seed + 1, seed + 2, seed + 3
MAX_SEED = 2**63 - SEEDS_PER_RUN
TICK_S = 10.0                   # progress while distilling (the first run compiles kernels)
WARM_UP_BB84_PULSES = 20_000_000

# Abort reasons that are an attack's measured signature: a QBER upper bound over the threshold
# or a drop of B92's conclusive yield. Any other abort (too few bits, a failed Cascade frame)
# says nothing about an eavesdropper.
ATTACK_SIGNATURES = frozenset({"qber_above_threshold", "conclusive_yield_drop"})


@dataclass
class BlockOutcome:
    """What one demo block showed: a key at both ends, or why not."""

    key_agreed: bool
    aborted: bool
    reasons: list = field(default_factory=list)

    @property
    def attack_signature(self) -> bool:
        return bool(ATTACK_SIGNATURES.intersection(self.reasons))


def attack_verdict(outcome: BlockOutcome) -> str:
    """``detected`` only when the signature was measured; ``undetermined`` when the block
    failed for another reason first; ``missed`` when a key came out despite the attack."""
    if outcome.attack_signature:
        return "detected"
    return "undetermined" if outcome.aborted else "missed"


def _verdict_text(outcome: BlockOutcome) -> str:
    verdict = attack_verdict(outcome)
    if verdict == "detected":
        return "yes (" + ", ".join(r for r in outcome.reasons if r in ATTACK_SIGNATURES) + ")"
    if verdict == "undetermined":
        return (f"not determined — that block failed for another reason "
                f"({', '.join(outcome.reasons)}) before the attack's signature was measured")
    return "NO — a key was produced under attack"


def _say(msg: str) -> None:
    print(msg, flush=True)


def kernels_cached() -> bool:
    """Whether numba's on-disk cache holds compiled post-processing kernels already."""
    import postprocessing
    root = pathlib.Path(postprocessing.__file__).parent
    return any(root.glob("**/__pycache__/*.nbi"))


@contextlib.contextmanager
def _ticker(what: str, every_s: float = TICK_S):
    """Print a line every ``every_s`` while a long step runs, so a first run is not silent."""
    done = threading.Event()
    t0 = time.monotonic()

    def tick():
        while not done.wait(every_s):
            _say(f"    ... {what}, {time.monotonic() - t0:.0f} s")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


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
                done = min(covered_ps / need_ps, 1.0)
                _say(f"    streamed {done:.0%} of the block: {int(covered_ps / slot_ps):,} slots, "
                     f"{sum(t.size for t in times):,} events")
    finally:
        board.stop_acquisition()
        board.queued_batches()   # events past the block are not part of it
    return np.concatenate(times), np.concatenate(chans), int(covered_ps / slot_ps)


def _format_estimate(s, threshold: float) -> str:
    """The sample QBER with the finite-size bound and the threshold the bound was compared with
    (a low sample QBER followed by an abort otherwise reads as a contradiction)."""
    if not s.sample_bits or s.qber_estimate != s.qber_estimate:      # no sample: NaN
        return "no QBER sample (too few sifted bits)"
    text = f"QBER {s.qber_estimate:.2%} in a {s.sample_bits:,}-bit sample"
    if s.qber_upper == s.qber_upper:
        relation = ">" if s.qber_upper > threshold else "<="
        text += (f", finite-size upper bound {s.qber_upper:.2%} {relation} threshold "
                 f"{threshold:.2%}")
    return text


def run_block(params, n_pulses: int, seed: int,
              b92_calibration: dict | None = None) -> BlockOutcome:
    """One block over simulated hardware: did both ends get the same non-empty key, and if not,
    why the block stopped.

    b92_calibration: for B92, what the node knows from calibration (expected conclusive yield
    per pulse, Bob's detection efficiency); Alice's mu is read from her board.
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
                 f"block of {n_pulses:,} pulses ...")
            t0 = time.monotonic()
            timestamps, channels, covered = _collect_block(b_board, n_pulses, slot_ps)
            t1 = time.monotonic()
            _say(f"  Bob received {timestamps.size:,} events over {covered:,} slots (the block "
                 f"rounded up to whole event batches) in {t1 - t0:.1f} s; distilling ...")
            sync_bits = sync_on_bits(sync_key, 0, covered // sync_period + 2)
            if params.protocol == "bb84":
                protocol_args = dict(intensities=(mu, nu1, nu2),
                                     intensity_probabilities=(p_sig, p_d1, 1.0 - p_sig - p_d1))
            else:
                protocol_args = dict(b92_calibration)
            first = "" if kernels_cached() else " (first run: numba compiles the kernels, " \
                "about a minute, once)"
            with _ticker("distilling" + first):
                result = distill_events(
                    timestamps_ps=timestamps, channels=channels, nominal_period_ps=slot_ps,
                    sync_period=sync_period, sync_on_bits=sync_bits, protocol=params.protocol,
                    alice_pattern=a_board.request_pattern, n_pulses=covered,
                    qber_threshold=QBER_THRESHOLD,
                    rng=ProtocolRandom(), **protocol_args)
        finally:
            for dev in (*alice.values(), *bob.values()):
                dev.close()
    s = result.stats
    threshold = min(QBER_THRESHOLD, B92_QBER_CEILING) if params.protocol == "b92" \
        else QBER_THRESHOLD
    _say(f"  sifted {s.sifted_bits:,} bits; {_format_estimate(s, threshold)}; "
         f"post-processing took {sum(s.timings_s.values()):.2f} s")
    if s.protocol == "b92" and s.conclusive_per_pulse == s.conclusive_per_pulse:
        expected = b92_calibration["expected_conclusive_per_pulse"]
        _say(f"  conclusive yield {s.conclusive_per_pulse:.3e}/pulse (calibration "
             f"{expected:.3e})")
    if s.cascade_disclosed_bits:
        _say(f"  Cascade disclosed {s.cascade_disclosed_bits:,} parity bits "
             f"(efficiency f = {s.reconcile_efficiency:.3f})")
    same = bool(np.array_equal(result.alice_key, result.bob_key))
    if s.aborted:
        why = "; ".join(s.abort_details) or ", ".join(s.abort_reasons)
        _say(f"  block ABORTED: {', '.join(s.abort_reasons)} ({why}) — no key stored, "
             f"as it must be")
    else:
        _say(f"  secret key: {s.key_length:,} bits ({s.bound}, eps_sec={s.eps_sec:g}, "
             f"eps_cor={s.eps_cor:g}); identical at both ends: {'yes' if same else 'NO'}")
    ok = same and s.key_length > 0 and not s.aborted
    result.alice_key.fill(0)
    result.bob_key.fill(0)
    return BlockOutcome(key_agreed=ok, aborted=bool(s.aborted), reasons=list(s.abort_reasons))


def build_parser() -> argparse.ArgumentParser:
    from sim_backend.cli import _number, _Parser

    parser = _Parser(
        prog="qkd-node demo", description="two QKD nodes on simulated hardware: decoy BB84 with "
        "and without intercept-resend, then B92 with and without an unambiguous-discrimination "
        "attack")
    parser.add_argument("--distance-km", type=_number("distance_km", float),
                        default=DEFAULT_DISTANCE_KM, metavar="KM",
                        help=f"fibre length of the BB84 scenes in km, [0, 1000] (default "
                             f"{DEFAULT_DISTANCE_KM:g}); the B92 scenes always run at "
                             f"{B92_DISTANCE_KM:g} km, where B92 can give key")
    parser.add_argument("--pulses", type=_number("pulses", float), default=DEFAULT_PULSES,
                        metavar="N",
                        help=f"pulses in the honest BB84 block, [{MIN_PULSES:g}, {MAX_PULSES:g}] "
                             f"(default {DEFAULT_PULSES:g}: enough for a finite-key decoy bound "
                             f"at 10 km); the attacked block has a quarter; B92 blocks "
                             f"{B92_PULSES:g}")
    parser.add_argument("--seed", type=_number("seed", int), default=None, metavar="N",
                        help=f"simulator seed, integer in [0, 2^63 - {SEEDS_PER_RUN}] (default: "
                             f"random); scenes use N .. N+{SEEDS_PER_RUN - 1}")
    parser.add_argument("--warm-up", action="store_true",
                        help="compile and cache the numba kernels with two small blocks, then "
                             "exit (make runs this during set-up)")
    return parser


def _usage_error(message: str) -> int:
    print(f"qkd-node demo: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from sim_backend.params import LinkParams, ParameterError

    from sim_backend.cli import UsageError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:          # one line, not argparse's usage block
        return _usage_error(str(exc))
    except SystemExit as exc:          # --help
        return exc.code if isinstance(exc.code, int) else 0
    if not MIN_PULSES <= args.pulses <= MAX_PULSES:
        return _usage_error(f"pulses = {args.pulses:g} is outside [{MIN_PULSES:g}, "
                            f"{MAX_PULSES:g}]")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        return _usage_error(f"seed = {args.seed} is outside the accepted range "
                            f"[0, 2^63 - {SEEDS_PER_RUN}]")
    seed = args.seed if args.seed is not None else secrets.randbelow(MAX_SEED + 1)
    try:
        honest = LinkParams.preset("gys", distance_km=args.distance_km)
        attacked = LinkParams.preset("gys", distance_km=args.distance_km,
                                     eve="intercept-resend", eve_fraction=1.0)
    except ParameterError as exc:
        return _usage_error(str(exc))
    if args.warm_up:
        return warm_up(seed)
    _say("qkd-node demo: simulated hardware on loopback, drivers by URL, numba post-processing")
    if not kernels_cached():
        _say("(first run: numba compiles the post-processing kernels while the first blocks "
             "distil — about a minute, once; progress every 10 s. `make` does this at set-up.)")
    try:
        honest_bb84 = run_block(honest, int(args.pulses), seed)
        attacked_bb84 = run_block(attacked, int(args.pulses) // 4, seed + 1)
        honest_b92, attacked_b92 = _b92_scenes(seed + 2)
    except (DeviceError, DistillInputError) as exc:
        print(f"qkd-node demo: error: {exc}", file=sys.stderr)
        return 1
    _say(summary(honest_bb84, attacked_bb84, honest_b92, attacked_b92))
    caught = attack_verdict(attacked_bb84) == "detected" and \
        attack_verdict(attacked_b92) == "detected"
    b92_as_expected = honest_b92.reasons == ["no_security_proof"]
    return 0 if honest_bb84.key_agreed and b92_as_expected and caught else 1


def _agreed_text(outcome: BlockOutcome) -> str:
    if outcome.key_agreed:
        return "yes"
    return f"no ({', '.join(outcome.reasons)})" if outcome.reasons else "no"


def summary(honest_bb84: BlockOutcome, attacked_bb84: BlockOutcome, honest_b92: BlockOutcome,
            attacked_b92: BlockOutcome) -> str:
    return (f"\nBB84: key agreed without Eve: {_agreed_text(honest_bb84)}; intercept-resend "
            f"detected: {_verdict_text(attacked_bb84)}.\nB92 (no security proof with laser "
            f"pulses: never a key source): honest block stopped for that alone: "
            f"{'yes' if honest_b92.reasons == ['no_security_proof'] else _agreed_text(honest_b92)}"
            f"; unambiguous-discrimination attack detected: {_verdict_text(attacked_b92)}.")


def warm_up(seed: int) -> int:
    """Run a small B92 block (sifting, estimation, Cascade, verification, PA) and a small BB84
    block (alignment, BB84 sifting, decoy estimation) so numba compiles and caches every kernel
    the demo needs; their output goes to stderr as progress."""
    from sim_backend.params import LinkParams

    t0 = time.monotonic()
    print("compiling the numba kernels once (cached for later runs) ...", file=sys.stderr,
          flush=True)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            _b92_scenes(seed, with_attack=False)
            run_block(LinkParams.preset("gys", distance_km=DEFAULT_DISTANCE_KM),
                      WARM_UP_BB84_PULSES, seed + 1)
        except (DeviceError, DistillInputError) as exc:
            print(f"qkd-node demo --warm-up: error: {exc}", file=sys.stderr)
            return 1
    print(f"kernels ready in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


def _b92_scenes(seed: int, with_attack: bool = True) -> tuple[BlockOutcome, BlockOutcome | None]:
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
    honest_outcome = run_block(honest, B92_PULSES, seed, calibration)
    if not with_attack:
        return honest_outcome, None
    attacked = run_block(honest.replace(eve="usd", eve_fraction=1.0), B92_PULSES // 4,
                         seed + 1, calibration)
    return honest_outcome, attacked


if __name__ == "__main__":
    sys.exit(main())
