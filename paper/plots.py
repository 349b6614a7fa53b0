"""PNG figures of the measured results (matplotlib, Agg backend; imported only by ``make paper``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from paper import extrapolation as ex  # noqa: E402


def detection(results: dict, path: Path) -> None:
    attacks = [a for a in results["detection"]]
    models = []
    for a in attacks:
        key = (a["protocol"], a["model"])
        if key not in models:
            models.append(key)
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 2.6 * len(models)), squeeze=False)
    for i, key in enumerate(models):
        for a in (x for x in attacks if (x["protocol"], x["model"]) == key):
            for j, test in enumerate(("any error", "node rule")):
                c = next((c for c in a["curves"] if c["test"] == test), None)
                if c is None and j == 0:
                    c = next((c for c in a["curves"] if c["test"] == "yield drop"), None)
                if c is None:
                    continue
                ax = axes[i][j]
                label = "no Eve" if a["model"] == "none" else f"{a['fraction']:.0%} of pulses"
                line, = ax.plot(c["bits"], c["analytic"], "-", lw=1.2, label=f"{label} (analytic)")
                lo = [s - l for s, l in zip(c["simulated"], c["ci_low"])]
                hi = [h - s for s, h in zip(c["simulated"], c["ci_high"])]
                ax.errorbar(c["bits"], c["simulated"], yerr=[lo, hi], fmt="o", ms=3,
                            color=line.get_color(), capsize=2, label=f"{label} (simulated)")
                ax.set_xscale("log", base=2)
                ax.set_ylim(-0.03, 1.03)
                test = c["test"]
                if key[0] == "b92" and test == "node rule":   # B92 never yields key here
                    test = "node's eavesdropper alarm (B92 never yields key)"
                ax.set_title(f"{key[0].upper()} {key[1]}: {test}", fontsize=9)
                ax.set_xlabel("conclusive bits (honest yield)" if c["test"] == "yield drop"
                              else "sampled bits m")
                ax.set_ylabel("P(abort)")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6, loc="lower right")
        if key[1] == "usd":
            axes[i][1].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def factoring(results: dict, path: Path) -> None:
    rsa = results["rsa"]
    x = results["extrapolation"]
    fig, ax = plt.subplots(figsize=(8, 5))
    bits = [r["bits"] for r in rsa]
    ax.plot(bits, [r["mean_s"] for r in rsa], "o", label="measured here: mean per modulus (1 core)")
    ax.plot(bits, [r["max_s"] for r in rsa], "v", ms=4, alpha=0.6, label="measured: slowest")
    grid = list(range(min(bits), 2049, 8))
    ax.plot([b for b in grid if b <= 512], [ex.qs_seconds(b, x["qs_ln_a"]) for b in grid if b <= 512],
            "--", label="quadratic sieve L[1/2, 1], fitted to our points")
    year = ex.SECONDS_PER_YEAR
    nfs = [b for b in grid if b >= 300]
    ax.plot(nfs, [ex.nfs_core_years(b) * year for b in nfs], "-",
            label="number field sieve L[1/3, 1.923], scaled from RSA-250 (core-seconds)")
    for k, r in enumerate(x["records"]):
        ax.plot(r["bits"], r["core_years"] * year, "s", color="k")
        ax.annotate(f"{r['name']}: {r['core_years']:g} core-years", (r["bits"], r["core_years"] * year),
                    textcoords="offset points", xytext=(10, -14 + 16 * k), fontsize=7)
    for t in x["targets"]:
        ax.plot(t["bits"], t["core_years"] * year, "D", color="tab:red")
        ax.annotate(f"RSA-{t['bits']}: {t['core_years']:.2g} core-years", (t["bits"], t["core_years"] * year),
                    textcoords="offset points", xytext=(-120, 6), fontsize=7)
    ax.axhline(3.17, color="gray", lw=0.8, ls=":")
    ax.annotate("paper: 317 s for 100 numbers = 3.17 s each", (min(bits), 3.17), fontsize=7,
                xytext=(0, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("modulus size (bits)")
    ax.set_ylabel("time to factor one modulus (s, one core)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict, img_dir: Path) -> list[Path]:
    img_dir.mkdir(parents=True, exist_ok=True)
    out = [img_dir / "paper-detection.png", img_dir / "paper-factoring.png"]
    detection(results, out[0])
    factoring(results, out[1])
    return out
