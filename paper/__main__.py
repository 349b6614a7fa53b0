"""``python -m paper [--quick] [--out DIR] [--seed N] [--no-plots]``: rerun every measurement and
write DIR/paper-comparison.md, DIR/paper-results.json and DIR/img/*.png (DIR defaults to docs/).

Full mode takes minutes on a 2-core machine; ``--quick`` (small sizes, few blocks) takes seconds
and is what the tests run. Exit 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import flint

from paper import extrapolation as ex
from postprocessing import finite_key as fk
from sim_backend.params import LinkParams
from paper import qkd_detection, qkd_first_key, report, rsa_factoring
from paper.node_rules import (QberRule, YieldRule, b92_refusal, distill_default, may_yield_key,
                               node_protocols)

FULL = dict(blocks=200, m_max_any=256, m_max_node=1 << 15, m_max_usd=1 << 13,
            distances=(5.0, 10.0, 25.0, 50.0), targets=(256, 1_000_000), max_events=8e7,
            rsa_sizes=(64, 80, 96, 112, 128, 144, 160, 176), rsa_count=100)
QUICK = dict(blocks=30, m_max_any=64, m_max_node=1 << 11, m_max_usd=1 << 10,
             distances=(10.0,), targets=(256,), max_events=2e6,
             rsa_sizes=(32, 40, 48), rsa_count=5)
TARGET_BITS = (1024, 2048)
CONFIDENCE = 0.99


def _total_transmittance_at_0km() -> float:
    """Channel times detector efficiency of the GYS link at 0 km (what the USD bound compares)."""
    p = LinkParams.preset("gys", protocol="b92", distance_km=0.0)
    return float(p.channel_transmittance * p.detector_efficiency)


def _node_settings() -> dict:
    return {"qber_threshold_bb84": QberRule.for_protocol("bb84").threshold,
            "qber_threshold_b92": QberRule.for_protocol("b92").threshold,
            "qber_tol": float(distill_default("qber_tol")),
            "clean_basis_sample": {p: QberRule.for_protocol(p).smallest_clean_basis_sample()
                                   for p in ("bb84", "b92")},
            "b92_yields_key": may_yield_key("b92"),
            "b92_refusal": b92_refusal(),
            "b92_usd_limit": float(getattr(fk, "USD_SUCCESS_SINGLE_PHOTON", float("nan"))),
            "eta_total_0km": _total_transmittance_at_0km(),
            "eps_sec": float(distill_default("eps_sec")),
            "eps_cor": float(distill_default("eps_cor")),
            "sample_fraction": float(distill_default("sample_fraction")),
            "min_sample_size": int(distill_default("min_sample_size")),
            "yield_eps": YieldRule.from_node().eps,
            "yield_rel_tolerance": YieldRule.from_node().rel_tolerance,
            "protocols": list(node_protocols())}


def collect(*, quick: bool, seed: int, log=print) -> dict:
    """Run every measurement; the returned dict is everything the report and plots show."""
    cfg = QUICK if quick else FULL
    t0 = time.perf_counter()
    log("QKD: abort probability against sampled bits")
    detection = qkd_detection.run(blocks=cfg["blocks"], m_max_any=cfg["m_max_any"],
                                  m_max_node=cfg["m_max_node"], m_max_usd=cfg["m_max_usd"],
                                  seed=seed, confidence=CONFIDENCE, log=log)
    log("QKD: pulses and time to a first key")
    first = qkd_first_key.run(distances=cfg["distances"], targets=cfg["targets"],
                              max_events=cfg["max_events"], seed=seed + 7, log=log)
    log("RSA: factoring")
    rsa = rsa_factoring.run(cfg["rsa_sizes"], cfg["rsa_count"], seed + 11, log=log)
    ln_a = ex.qs_fit([(r.bits, r.mean_s) for r in rsa if r.bits >= 64] or
                     [(r.bits, r.mean_s) for r in rsa])
    extrapolation = {
        "anchor": {"name": ex.RSA_250.name, "bits": ex.RSA_250.bits,
                   "core_years": ex.RSA_250.core_years},
        "records": [{"name": r.name, "bits": r.bits, "core_years": r.core_years, "date": r.date,
                     "predicted_core_years": ex.nfs_core_years(r.bits)} for r in ex.RECORDS],
        "targets": [{"bits": b, "core_years": ex.nfs_core_years(b)} for b in TARGET_BITS],
        "qs_ln_a": ln_a,
        "library_note": rsa_factoring.__doc__.split("\n\n")[1].replace("\n", " "),
    }
    meta = {"quick": quick, "seed": seed,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}",
            "cores": os.cpu_count() or 1, "flint_version": flint.__version__,
            "confidence": CONFIDENCE, "blocks": cfg["blocks"], "m_max_any": cfg["m_max_any"],
            "m_max_node": cfg["m_max_node"], "distances_km": list(cfg["distances"]),
            "targets_bits": list(cfg["targets"]), "max_events": cfg["max_events"],
            "detection_distance_km": qkd_detection.DISTANCE_KM,
            "gys_misalignment": float(LinkParams.preset("gys", protocol="bb84").misalignment),
            "first_key_cases": [c.name for c in qkd_first_key.cases()],
            "node": _node_settings()}
    results = {"meta": meta, "detection": qkd_detection.to_dict(detection),
               "first_key": qkd_first_key.to_dict(first), "rsa": rsa_factoring.to_dict(rsa),
               "extrapolation": extrapolation}
    meta["elapsed_s"] = time.perf_counter() - t0
    return results


def write(results: dict, out_dir: Path, *, plots: bool = True) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "paper-results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    doc = out_dir / "paper-comparison.md"
    doc.write_text(report.render(results))
    if plots:
        from paper import plots as _plots      # matplotlib only where figures are drawn
        _plots.write_all(results, out_dir / "img")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paper", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds (for tests)")
    ap.add_argument("--seed", type=int, default=20260412)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    ap.add_argument("--from-json", type=Path, metavar="FILE",
                    help="re-render the document and figures from a saved paper-results.json")
    args = ap.parse_args(argv)
    if args.seed < 0:
        ap.error(f"--seed {args.seed} must be >= 0")
    if args.from_json is not None:
        try:
            results = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as exc:
            ap.error(f"--from-json {args.from_json}: cannot read results ({exc})")
    else:
        results = collect(quick=args.quick, seed=args.seed,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    doc = write(results, args.out, plots=not args.no_plots)
    print(f"wrote {doc} ({results['meta']['elapsed_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
