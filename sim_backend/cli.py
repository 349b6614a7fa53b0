"""``qkd-node sim``: run the simulated link without sockets, or serve the simulated devices.

``run`` simulates a batch (``sim_backend.link.simulate``) and prints the measured figures beside
the closed-form expectations (``physics.theory``) and every parameter used, so a run can be
checked and reproduced from its output alone. ``serve`` belongs to ``sim_backend.serve``.
Bad flags give exit code 2 and one line on stderr naming the value and the accepted range.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import secrets
import sys
import time
from typing import Any, Sequence

from sim_backend.params import (EVE_MODELS, MAX_CLOCK_DRIFT_PPM, MAX_EVE_RESEND_MU,
                                MAX_EVE_RESEND_PHOTONS, PRESETS, PROTOCOLS, LinkParams,
                                ParameterError)

MAX_PULSES = 10**13
MAX_SEED = 2**63
PROGRESS_INTERVAL_S = 2.0

# What each physics flag means, its unit and accepted range (LinkParams checks the same ranges;
# the range of nu1/nu2/p_decoy1 depends on other values, as said). Defaults come from the preset.
PARAMETER_HELP: dict[str, tuple[str, str]] = {
    "mu": ("signal mean photon number", "photons/pulse, (0, 100]"),
    "nu1": ("first decoy mean photon number", "photons/pulse, [0, mu]"),
    "nu2": ("second decoy mean photon number", "photons/pulse, [0, nu1]"),
    "p_signal": ("probability of the signal intensity", "(0, 1]"),
    "p_decoy1": ("probability of the first decoy", "[0, 1 - p_signal]"),
    "p_basis_x": ("probability of Alice's X basis", "[0, 1]"),
    "loss_db_per_km": ("fibre attenuation", "dB/km, [0, 10]"),
    "detector_efficiency": ("Bob's transmittance x detection efficiency (eta_Bob)", "(0, 1]"),
    "dark_count_probability": ("dark/background click probability per pulse (Y0)", "[0, 0.5]"),
    "misalignment": ("optical misalignment error e_det", "[0, 0.5]"),
    "dead_time_ns": ("detector dead time", "ns, [0, 1e6]"),
    "afterpulse_probability": ("afterpulse probability after a click", "[0, 0.9]"),
    "afterpulse_time_constant_ns": ("afterpulse decay time", "ns, (0, 1e6]"),
    "jitter_ps": ("detector timing jitter (rms)", "ps, [0, 1e6]"),
    "clock_hz": ("pulse clock rate", "Hz, [1e3, 1e11]"),
    "clock_offset_ps": ("Bob's clock offset from Alice's", "ps, integer in [-1e15, 1e15]"),
    "clock_drift_ppm": ("Bob's clock drift", f"ppm, [-{MAX_CLOCK_DRIFT_PPM:g}, "
                                            f"{MAX_CLOCK_DRIFT_PPM:g}]"),
    "efficiency_mismatch": ("relative efficiency deficit of detectors V and A", "[0, 1)"),
    "polarization_drift_rad_per_sqrt_s": ("random-walk polarization drift",
                                          "rad/sqrt(s), [0, 100]"),
    "sync_period": ("slots between sync pulses", "slots, integer in [2, 2^40]"),
}

# Parameters with flags of their own in the usage line; the rest come from LinkParams fields.
_EXPLICIT = {"protocol", "distance_km", "eve", "eve_fraction", "eve_resend_photons",
             "eve_resend_mu", "eve_bypass_fibre"}


class UsageError(Exception):
    """A command-line value outside its accepted range."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and call sys.exit
        raise UsageError(message)


def _number(name: str, kind: type):
    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} = {text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} = {text!r} is not a finite number")
        if kind is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"{name} = {text!r} is not an integer")
            if text.strip().lstrip("+-").isdigit():
                return int(text)        # exact, even beyond 2^53
            return int(value)
        return value
    return parse


def check_seed(seed: int) -> int:
    if not 0 <= seed < MAX_SEED:
        raise ParameterError(f"seed = {seed} is outside the accepted range [0, 2^63)")
    return seed


def _default_of(name: str, preset: str = "gys"):
    for f in dataclasses.fields(LinkParams):
        if f.name == name:
            return PRESETS[preset].get(name, f.default)
    raise KeyError(name)


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that choose the simulated link: protocol, distance, eavesdropper, every parameter."""
    parser.add_argument("--protocol", default="bb84",
                        help=f"one of {', '.join(PROTOCOLS)} (default bb84)")
    parser.add_argument("--distance-km", type=_number("distance_km", float), default=None,
                        metavar="KM", help=f"fibre length in km, [0, 1000] (default "
                                           f"{_default_of('distance_km'):g})")
    parser.add_argument("--eve", default="none",
                        help=f"eavesdropper model, one of {', '.join(EVE_MODELS)} (default none)")
    parser.add_argument("--eve-fraction", type=_number("eve_fraction", float), default=None,
                        metavar="F", help="fraction of pulses attacked, in [0, 1]; needs --eve "
                                          "(default 1 when --eve is set)")
    parser.add_argument("--eve-resend-photons", type=_number("eve_resend_photons", int),
                        default=None,
                        help=f"usd-multiphoton: photons in Eve's resent Fock state on each USD "
                             f"success, integer in [1, {MAX_EVE_RESEND_PHOTONS}] (default 1)")
    parser.add_argument("--eve-resend-mu", type=_number("eve_resend_mu", float), default=None,
                        help=f"usd-multiphoton: resend a coherent pulse of this mean photon "
                             f"number instead, photons/pulse in (0, {MAX_EVE_RESEND_MU:g}] "
                             f"(default 0: the Fock state)")
    parser.add_argument("--eve-bypass-fibre", action="store_true", default=None,
                        help="usd-multiphoton: Eve's light reaches Bob without the fibre loss "
                             "(default: through the fibre)")
    parser.add_argument("--preset", default="gys",
                        help=f"parameter set the overrides start from, one of "
                             f"{', '.join(PRESETS)} (default gys: Gobby-Yuan-Shields 2004; snspd: 2 km, "
                             f"60 %% detectors)")
    parser.add_argument("--seed", type=_number("seed", int), default=None, metavar="N",
                        help="RNG seed, integer in [0, 2^63) (default: random, printed for "
                             "reproduction)")
    for f in dataclasses.fields(LinkParams):
        if f.name in _EXPLICIT:
            continue
        kind = int if f.type in ("int", int) else float
        meaning, unit_range = PARAMETER_HELP[f.name]
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                            metavar="X", type=_number(f.name, kind),
                            help=f"{meaning}; {unit_range} (default {_default_of(f.name):g})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qkd-node sim", description="Simulated QKD link and devices")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="simulate a batch of pulses and print the link statistics")
    run.add_argument("--pulses", type=_number("pulses", int), required=True,
                     metavar="N", help=f"number of pulses (slots) to simulate, integer in "
                                       f"[1, {MAX_PULSES:.0e}], e.g. 1e9 (required)")
    add_link_arguments(run)
    run.add_argument("--json", action="store_true", help="print one JSON object")
    serve = sub.add_parser("serve", help="serve the simulated devices (sim_backend.serve)")
    serve.add_argument("serve_args", nargs=argparse.REMAINDER)
    return parser


def link_params_from_args(args: argparse.Namespace) -> LinkParams:
    overrides: dict[str, Any] = {"protocol": args.protocol, "eve": args.eve}
    if args.distance_km is not None:
        overrides["distance_km"] = args.distance_km
    if args.eve_fraction is not None:
        if args.eve == "none":
            raise UsageError(f"--eve-fraction {args.eve_fraction:g} needs an eavesdropper: "
                             f"add --eve (one of {', '.join(EVE_MODELS[1:])})")
        overrides["eve_fraction"] = args.eve_fraction
    elif args.eve != "none":
        overrides["eve_fraction"] = 1.0
    for name in ("eve_resend_photons", "eve_resend_mu", "eve_bypass_fibre"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    given = []
    for f in dataclasses.fields(LinkParams):
        if f.name not in _EXPLICIT and getattr(args, f.name) is not None:
            overrides[f.name] = getattr(args, f.name)
            given.append(f.name)
    try:
        return LinkParams.preset(args.preset, **overrides)
    except ParameterError as exc:
        # A range may depend on another value (nu1 <= mu): say which values the user gave, so
        # a complaint about a flag they never typed makes sense.
        culprit = str(exc).split(" = ", 1)[0]
        if culprit in PRESETS.get(args.preset, {}) and culprit not in given and given:
            mine = ", ".join(f"--{g.replace('_', '-')} {overrides[g]:g}" for g in given)
            raise ParameterError(f"{exc} — {culprit} is preset {args.preset}'s value, and its "
                                 f"range follows from {mine}; set --{culprit.replace('_', '-')} "
                                 f"too") from None
        raise


def _finite(obj: Any) -> Any:
    """JSON has no NaN: undefined figures (no sifted bits, say) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def run_report(params: LinkParams, pulses: int, seed: int, progress=None) -> dict[str, Any]:
    """Simulate and assemble the report: parameters, measured figures, expectations."""
    from sim_backend.link import simulate
    from sim_backend.physics import theory

    result = simulate(params, pulses, seed=seed, progress=progress)
    report: dict[str, Any] = {"seed": seed, **params.to_dict(), **result.to_dict()}
    names = ("signal", "decoy1", "decoy2")
    if params.protocol == "lt3" and params.eve == "usd-multiphoton" and params.eve_active:
        # no closed form for the three-state attack: measured figures only
        report["expected"] = {"detection_probability": None, "qber": None,
                              "conclusive_fraction": None}
        for stats in report["intensities"].values():
            stats["expected_gain"] = stats["expected_error_rate"] = None
        expected = None
    else:
        expected = theory.expected_link(params)
        for k, name in enumerate(names):
            if name in report["intensities"]:
                report["intensities"][name]["expected_gain"] = float(expected.gains[k])
                report["intensities"][name]["expected_error_rate"] = float(
                    expected.error_rates[k])
        report["expected"] = {k: (float(v) if isinstance(v, float) else v)
                              for k, v in expected.to_dict().items()}
    if expected is not None and params.eve == "usd-multiphoton" and params.eve_active:
        report["expected"]["usd_multiphoton"] = theory.b92_expectation(params).to_dict()
    elif expected is not None and params.eve_active and params.protocol != "lt3":
        sig = theory.eve_signature(params.protocol, params.eve, params.eve_fraction, params.mu,
                                   params.transmittance)
        report["expected"]["eve_ideal_optics"] = dataclasses.asdict(sig)
    report["pulses_per_second"] = pulses / result.wall_time_s if result.wall_time_s else None
    for stats in report["intensities"].values():
        # n x p (expected pulses at that intensity) is a count: no 99999999.99999996 in the JSON
        if isinstance(stats.get("pulses"), float):
            stats["pulses"] = round(stats["pulses"])
    for key in ("p_decoy2",):       # 1 - 0.8 - 0.1 computed in floats
        if isinstance(report.get(key), float):
            report[key] = round(report[key], 12)
    return _finite(report)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _print_table(report: dict[str, Any], out) -> None:
    exp = report["expected"]
    print(f"{report['protocol'].upper()} link, {report['distance_km']:g} km, "
          f"{report['pulses']:.3g} pulses, seed {report['seed']}"
          + (f", eavesdropper {report['eve']} on {report['eve_fraction']:.0%} of pulses"
             if report["eve"] != "none" else ""), file=out)
    rows = [("detection probability", report["detection_probability"],
             exp["detection_probability"]),
            ("QBER (sifted)", report["qber"], exp["qber"])]
    if report["protocol"] == "b92":
        rows.append(("conclusive fraction", report.get("conclusive_fraction"),
                     exp["conclusive_fraction"]))
    for name, s in report["intensities"].items():
        rows.append((f"gain {name} ({s['mean_photon_number']:g})", s["gain"], s["expected_gain"]))
        rows.append((f"error {name}", s["error_rate"], s["expected_error_rate"]))
    print(f"{'figure':<28}{'measured':>14}{'expected':>14}", file=out)
    for name, measured, expected in rows:
        print(f"{name:<28}{_fmt(measured):>14}{_fmt(expected):>14}", file=out)
    print(f"detections {report['detections']}, sifted bits {report['sifted_bits']}, "
          f"double clicks {report['double_clicks']}, sync events {report['sync_events']}, "
          f"{_fmt(report['wall_time_s'])} s", file=out)
    keys = ("mu", "nu1", "nu2", "loss_db_per_km", "detector_efficiency",
            "dark_count_probability", "misalignment", "dead_time_ns", "clock_hz")
    print("parameters: " + ", ".join(f"{k}={_fmt(report[k])}" for k in keys), file=out)


def _cmd_run(args: argparse.Namespace) -> int:
    params = link_params_from_args(args)
    if args.pulses <= 0 or args.pulses > MAX_PULSES:
        raise ParameterError(f"pulses = {args.pulses} is outside the accepted range "
                             f"[1, {MAX_PULSES:.0e}]")
    seed = check_seed(args.seed) if args.seed is not None else secrets.randbits(63)
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = now
            print(f"# {done / total:6.1%} of {total:.3g} pulses", file=sys.stderr, flush=True)

    report = run_report(params, args.pulses, seed, progress)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_table(report, sys.stdout)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from sim_backend.serve import main as serve_main  # lazily: the lead's module
    return serve_main(args.serve_args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] == ["serve"]:
        # The serve command owns its flags: hand them over unparsed.
        return _cmd_serve(argparse.Namespace(serve_args=argv[1:]))
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if args.command == "serve":
            return _cmd_serve(args)
        return _cmd_run(args)
    except (UsageError, ParameterError) as exc:
        print(f"qkd-node sim: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
