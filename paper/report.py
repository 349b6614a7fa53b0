"""docs/paper-comparison.md from the measured results (a dict; see ``__main__.collect``).

Every number in the document is read from ``results`` here; the prose around the numbers is
fixed text. Table rows are built by the ``*_rows`` functions so that tests can compare them
with the data they came from.
"""

from __future__ import annotations

import math

from paper import extrapolation as ex


# -- formatting ---------------------------------------------------------------------------------

def fmt_s(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 600:
        return f"{seconds:.3g} s"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.3g} h"
    years = seconds / ex.SECONDS_PER_YEAR
    return f"{years:.3g} years" if years < 1e4 else f"{years:.2e} years"


def fmt_pct(x: float) -> str:
    if x is None or math.isnan(x):
        return "—"
    if x >= 1.0:
        return "100 %"
    if x > 0.999:
        return f"{x:.4%}".replace("%", " %")
    return f"{x:.3g}".replace("e", "e") if x < 1e-3 else f"{x * 100:.1f} %"


def fmt_count(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if x < 1e6 else f"{x:.3g}"


def fmt_years(core_years: float) -> str:
    return f"{core_years:.3g}" if core_years < 1e6 else f"{core_years:.2e}"


def table_line(cells: list[str]) -> str:
    """One Markdown table row; a '|' inside a cell is escaped so it cannot split the cell."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = [table_line(header), "|" + "|".join("---" for _ in header) + "|"]
    out += [table_line(r) for r in rows]
    return "\n".join(out)


# -- helpers on the results ---------------------------------------------------------------------

def _curve(attack: dict, test: str) -> dict | None:
    return next((c for c in attack["curves"] if c["test"] == test), None)


def _at(curve: dict, m: int) -> tuple[int, float, float, float, float]:
    """(grid point >= m, analytic, simulated, ci_low, ci_high)."""
    j = next((i for i, b in enumerate(curve["bits"]) if b >= m), len(curve["bits"]) - 1)
    return (curve["bits"][j], curve["analytic"][j], curve["simulated"][j], curve["ci_low"][j],
            curve["ci_high"][j])


def _attack(results: dict, protocol: str, model: str, fraction: float) -> dict | None:
    return next((a for a in results["detection"] if a["protocol"] == protocol
                 and a["model"] == model and abs(a["fraction"] - fraction) < 1e-9), None)


def verdict_text(d: dict) -> str:
    """The node's verdict on one timed block; B92's standing refusal is set apart from the
    alarms that depend on what Eve did."""
    if not d["aborted"]:
        return "not aborted"
    alarms = [r for r in d["reasons"] if r != "no_security_proof"]
    text = "aborted: " + (", ".join(alarms) if alarms else "no eavesdropper alarm")
    if "no_security_proof" in d["reasons"]:
        text += " (and no_security_proof, as on every B92 block)"
    return text


def target_text(bits: int) -> str:
    return "1 Mbit" if bits == 1_000_000 else f"{bits} bits"


def target_adj(bits: int) -> str:
    return "1-Mbit" if bits == 1_000_000 else f"{bits}-bit"


def no_key_text(r: dict) -> str:
    """Why a first-key search found no key, from its record."""
    if r["error"]:
        return r["error"]
    q = r["last_qber"]
    qber = f"; its first block's sample QBER was {q:.2%}" if q == q else ""
    if r["never"] == fk_refused():
        return f"none: {r['never']}{qber}"
    if r["never"]:
        return f"no key under the node's bound — never: {r['never']}"
    reasons = ", ".join(r["last_reasons"]) or "key below target"
    return (f"no key under the node's bound up to {fmt_count(r['budget_pulses'])} pulses "
            f"(node: {reasons})")


def fk_refused() -> str:
    from paper.qkd_first_key import REFUSED
    return REFUSED


def _sim_cell(curve: dict, m: int) -> str:
    b, an, sim, lo, hi = _at(curve, m)
    return f"{fmt_pct(sim)} [{fmt_pct(lo)}, {fmt_pct(hi)}] (analytic {fmt_pct(an)})"


# -- tables -------------------------------------------------------------------------------------

def paper_table_rows(results: dict) -> list[list[str]]:
    """The paper's table (method, running time, success rate), one row per measured method."""
    rows = []
    m_node = results["meta"]["node"]["min_sample_size"]
    for a in results["detection"]:
        d = a["decision"]
        node = _curve(a, "node rule") or _curve(a, "yield drop")
        t = (f"{fmt_s(d['acquisition_s'] + d['host_s'])} from first pulse to abort "
             f"({fmt_count(d['pulses'])} pulses = {fmt_s(d['acquisition_s'])} at 1 GHz, "
             f"{fmt_s(d['host_s'])} host)") if d else "—"
        verdict = verdict_text(d) if d else "not run"
        what = (f"QKD {a['label']} (false-abort rate)" if a["model"] == "none"
                else f"QKD {a['label']}")
        rows.append([what, t,
                     f"{_sim_cell(node, m_node)} of {node['blocks']} blocks; "
                     f"the timed block: {verdict}"])
    d_km = results["meta"]["detection_distance_km"]
    first_target = min(results["meta"]["targets_bits"])
    for r in results["first_key"]:
        if r["distance_km"] != d_km or r["target_bits"] != first_target:
            continue
        what = (f"QKD {r['case']}, no Eve: a first {target_adj(first_target)} secret key at "
                f"{d_km:g} km")
        if r["found"]:
            rows.append([what, f"{fmt_s(r['total_s'])} ({fmt_count(r['pulses'])} pulses = "
                               f"{fmt_s(r['acquisition_s'])} at 1 GHz, {fmt_s(r['host_s'])} host)",
                         f"key granted: {fmt_count(r['key_bits'])} bits"])
        else:
            rows.append([what, "—", no_key_text(r)])
    for r in results["rsa"]:
        rows.append([f"RSA: factor {r['count']} random {r['bits']}-bit moduli (FLINT, 1 core)",
                     f"{fmt_s(r['total_s'])} in all, {fmt_s(r['mean_s'])} each",
                     f"{r['factored']}/{r['count']} factored"])
    for e in results["extrapolation"]["targets"]:
        rows.append([f"RSA-{e['bits']} by the number field sieve (scaled from "
                     f"{results['extrapolation']['anchor']['name']})",
                     f"≈ {fmt_years(e['core_years'])} core-years "
                     f"(≈ {fmt_years(e['core_years'] / results['meta']['cores'])} years on "
                     f"this {results['meta']['cores']}-core machine)",
                     "not run: extrapolated"])
    return rows


def readings_rows(results: dict) -> list[list[str]]:
    rows = []
    cases = [("1: Eve attacks 75 % of pulses", "bb84", "intercept-resend", 0.75),
             ("1: Eve attacks 75 % of pulses", "b92", "intercept-resend", 0.75),
             ("1: Eve attacks 75 % of pulses", "b92", "b92-resend", 0.75),
             ("1: Eve attacks 75 % of pulses", "b92", "helstrom", 0.75),
             ("1: Eve attacks 75 % of pulses", "b92", "usd", 0.75),
             ("2: Eve's resent bit is right for Bob 3/4 of the time", "bb84",
              "intercept-resend", 1.0),
             ("2: Eve's resent bit is right for Bob 3/4 of the time", "b92", "b92-resend", 1.0)]
    for reading, proto, model, f in cases:
        a = _attack(results, proto, model, f)
        if a is None:
            continue
        if model == "usd":
            err = "0 (no errors: a yield drop instead)"
            need = (f"{fmt_count(a['bits_for_detection'])} conclusive bits' worth of pulses "
                    "(yield monitor)")
        else:
            err = f"{a['error_per_bit']:.4f} (measured {a['error_per_bit_measured']:.4f})"
            need = f"{fmt_count(a['bits_for_detection'])} sampled bits (any-error test)"
        rows.append([reading, a["label"], err, need, fmt_s(a["seconds_for_detection"])])
    return rows


SELECTED_BITS = {"any error": (1, 8, 64), "node rule": (1024, 4096, 8192, 32768),
                 "yield drop": (64, 256, 1024)}
"""Sample sizes shown in the selected-points table (the figure shows every point)."""


def curve_rows(results: dict) -> list[list[str]]:
    rows = []
    for a in results["detection"]:
        for c in a["curves"]:
            for m in SELECTED_BITS[c["test"]]:
                if m > c["bits"][-1]:
                    continue
                b, an, sim, lo, hi = _at(c, m)
                rows.append([a["label"], c["test"], str(b), f"{an:.4g}",
                             f"{sim:.4g} [{lo:.3g}, {hi:.3g}]"])
    return rows


def _target_cell(bits: int) -> str:
    return "256 bit" if bits == 256 else ("1 Mbit" if bits == 1_000_000 else f"{bits} bit")


def first_key_rows(results: dict) -> list[list[str]]:
    """One row per (protocol, distance, target); a protocol the node refuses key gets one row per
    distance, with the one block its search ran."""
    rows, refused = [], {}
    for r in results["first_key"]:
        if not r["found"] and r["never"] == fk_refused():
            refused.setdefault((r["case"], r["distance_km"]), []).append(r)
            continue
        if r["found"]:
            rows.append([r["case"], f"{r['distance_km']:g}", _target_cell(r["target_bits"]),
                         fmt_count(r["pulses"]), fmt_count(r["key_bits"]),
                         fmt_s(r["acquisition_s"]), fmt_s(r["host_s"]), fmt_s(r["total_s"])])
        else:
            rows.append([r["case"], f"{r['distance_km']:g}", _target_cell(r["target_bits"]),
                         no_key_text(r), "—", "—", "—", "—"])
    for (case, km), group in refused.items():
        ran = next((g["attempts"][0] for g in group if g["attempts"]), None)
        block = (f"; its one block of {fmt_count(ran['pulses'])} pulses measured a sample QBER "
                 f"of {ran['qber']:.2%} on {fmt_count(ran['sample_bits'])} bits"
                 if ran and ran["qber"] == ran["qber"] else "")
        rows.append([case, f"{km:g}", ", ".join(_target_cell(g["target_bits"]) for g in group),
                     f"none: {fk_refused()}{block}", "—", "—", "—", "—"])
    return rows


def unmeasured_line(results: dict) -> str:
    """A bullet naming the protocols the node offers that this run did not measure, or ''."""
    measured = {r["protocol"] for r in results["first_key"]}
    missing = [p for p in results["meta"]["node"]["protocols"] if p not in measured]
    if not missing:
        return ""
    return (f"- Not measured: {', '.join(f'`{p}`' for p in missing)}, which the node also "
            f"offers; this reproduction does not feed it (the loss-tolerant three-state "
            f"protocol needs its own calibrated link, see `docs/protocols.md`), and the "
            f"paper's comparison concerns B92.\n")


def refusal_rows(results: dict) -> list[list[str]]:
    """Each published B92 proof and the assumption the node misses, as the node states them."""
    proofs = results["meta"]["node"].get("b92_refusal", {}).get("proofs", {})
    return [[name, why] for name, why in proofs.items()]


def rsa_rows(results: dict) -> list[list[str]]:
    ln_a = results["extrapolation"]["qs_ln_a"]
    return [[str(r["bits"]), str(r["count"]), fmt_s(r["total_s"]), fmt_s(r["mean_s"]),
             fmt_s(r["median_s"]), fmt_s(r["max_s"]), f"{r['factored']}/{r['count']}",
             fmt_s(ex.qs_seconds(r["bits"], ln_a))] for r in results["rsa"]]


def extrapolation_rows(results: dict) -> list[list[str]]:
    x = results["extrapolation"]
    rows = [[r["name"], str(r["bits"]), f"{r['core_years']:g} (published, {r['date']})",
             f"{r['predicted_core_years']:.3g}"] for r in x["records"]]
    rows += [[f"RSA-{t['bits']}", str(t["bits"]), "—", fmt_years(t["core_years"])]
             for t in x["targets"]]
    return rows


def _span(values: list[float]) -> str:
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return f"{lo:.1%}" if f"{lo:.1%}" == f"{hi:.1%}" else f"{lo:.1%}–{hi:.1%}"


def paper_equivalent_bits(results: dict, total_s: float = 317.0, count: int = 100) -> float:
    """Modulus size at which ``count`` factorings take ``total_s`` here, from the measurements:
    log-linear interpolation between the measured sizes that bracket it, or beyond the largest
    measured size the quadratic sieve's L[1/2, 1] growth anchored on that size."""
    pts = sorted((r["bits"], r["total_s"] * count / r["count"]) for r in results["rsa"])
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if t0 <= total_s <= t1 and t1 > t0:
            return b0 + (b1 - b0) * math.log(total_s / t0) / math.log(t1 / t0)
    b_last, t_last = pts[-1]
    ln_a = math.log(t_last / count) - ex.log_l(b_last, 0.5, 1.0)
    lo, hi = 16.0, 1024.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if count * ex.qs_seconds(mid, ln_a) < total_s:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# -- the document -------------------------------------------------------------------------------

def render(results: dict, img_dir_rel: str = "img") -> str:
    meta, node = results["meta"], results["meta"]["node"]
    x = results["extrapolation"]
    det = {(a["protocol"], a["model"], a["fraction"]): a for a in results["detection"]}
    ir75 = det.get(("b92", "intercept-resend", 0.75))
    bb_ir100 = det.get(("bb84", "intercept-resend", 1.0))
    usd75 = det.get(("b92", "usd", 0.75))
    none_b92 = det.get(("b92", "none", 0.0))
    rsa_last = results["rsa"][-1]
    t1024 = next((t for t in x["targets"] if t["bits"] == 1024), None)
    t2048 = next((t for t in x["targets"] if t["bits"] == 2048), None)
    fk = results["first_key"]
    bb_keys = [r for r in fk if r["case"] == "decoy BB84" and r["found"]]
    b92_keys = [r for r in fk if r["protocol"] == "b92" and r["found"]]
    b92_none = [r for r in fk if r["protocol"] == "b92" and not r["found"]]
    none_bb84 = det.get(("bb84", "none", 0.0))
    node_none = {p: _curve(a, "node rule") for p, a in (("BB84", none_bb84), ("B92", none_b92))
                 if a is not None and _curve(a, "node rule") is not None}
    b92_gys_q = [r["last_qber"] for r in fk if r["case"].startswith("B92 (GYS")
                 and not r["found"] and r["last_qber"] == r["last_qber"]]
    b92_good_q = [r["last_qber"] for r in fk if r["protocol"] == "b92"
                  and not r["case"].startswith("B92 (GYS") and r["last_qber"] == r["last_qber"]]
    b92_cases = sorted({r["case"] for r in fk if r["protocol"] == "b92"})
    b92_refused = node.get("b92_yields_key") is False
    refusal = node.get("b92_refusal", {})
    bb_q = [r["last_qber"] for r in fk if r["case"] == "decoy BB84" and r["last_qber"] == r["last_qber"]]
    bb_far = max((r["distance_km"] for r in bb_keys), default=None)
    bb_targets = sorted({r["target_bits"] for r in bb_keys})
    bb_km = sorted({r["distance_km"] for r in bb_keys})
    b92_links = sorted({(r["case"], r["distance_km"]) for r in fk if r["protocol"] == "b92"})
    b92_links_with_key = sorted({(r["case"], r["distance_km"]) for r in b92_keys})
    clean = node.get("clean_basis_sample", {})
    paper_bits = paper_equivalent_bits(results)

    def row_text(r):
        return (f"{r['case']} at {r['distance_km']:g} km, {target_text(r['target_bits'])}: "
                f"{fmt_count(r['pulses'])} pulses, {fmt_s(r['total_s'])}")

    none_text = "; ".join(f"the honest {p} link aborts in "
                          f"{fmt_pct(_at(c, node['min_sample_size'])[2])} of blocks"
                          for p, c in node_none.items())
    if b92_refused:
        b92_key_sentence = (
            f"**B92 yields no key under the node's rule.** The node grants B92 a key length of "
            f"zero on every block (its bound reads “{refusal.get('bound', 'none')}”), so no "
            f"number of pulses gives B92 a first 256-bit or 1-Mbit key: the search below stops "
            f"at one block per B92 link, kept for the QBER it measured. The times and pulses to "
            f"a first key are decoy BB84's.")
    else:
        b92_key_sentence = (
            "The node read at this run still grants B92 key under its own rule; the B92 rows "
            "below show what that rule gave.")

    parts = [f"""# The freight paper's QKD-versus-RSA comparison, measured

*Generated by `make paper` (`python -m paper{' --quick' if meta['quick'] else ''}`) on
{meta['date']}, seed {meta['seed']}, on this machine ({meta['machine']}). Do not edit by hand:
every number below comes from that run ({meta['elapsed_s']:.0f} s in all); the raw results are
in `paper-results.json` beside this file.*

The freight design justifies itself with one comparison: with an eavesdropper whose "success
rate is set to 75 %", B92 QKD succeeds "close to 100 %" and "almost instantly", while factoring
100 RSA numbers took 317 s. This document reruns both sides — the QKD side with this project's
simulator (`sim_backend`) and post-processing core (`postprocessing`, the rules the node
enforces), the RSA side with a real factoring library — and says what the figures show.
{"On this node B92 runs for eavesdropper detection and demonstration only: it never yields key (see below)." if b92_refused else ""}

## The paper's table, regenerated

""",
             _table(["Method", "Running time (measured)", "Success rate (measured)"],
                    paper_table_rows(results)),
             f"""

QKD rows: the link is the GYS parameter set at {meta['detection_distance_km']:g} km with ideal
optics, so every error is Eve's. "Running time" is one block of the smallest size the node
judges (a test sample of {node['min_sample_size']} bits, {node['sample_fraction']:.0%} of the
sifted key), from its first pulse at a 1 GHz clock to the node's abort decision on this
machine, classical round trips excluded. "Success rate" is the node's abort rate with its own
rule at that sample size over repeated simulated blocks, with a {meta['confidence']:.0%}
Clopper–Pearson interval and the analytic value (for B92, the node's eavesdropper alarm; the
node also ends every B92 block with `no_security_proof`, Eve or not). At this size the node
would abort **without Eve too**: {none_text} — a sample this small cannot bound the QBER
tightly enough for any key, so "100 % success" here is the finite-size rule, not a feat of
detection. The first-key rows come from the first-key section below: the same distance, no
Eve, the GYS optics as they are (misalignment and dark counts included). RSA rows: wall time on one core of this machine; the extrapolated rows are
core-years of a 2.1 GHz Xeon core.

## Two readings of "Eve's success rate of 75 %"

""",
             _table(["Reading", "Simulated attack", "Error per sifted bit e",
                     "Bits until Eve escapes with P ≤ 1e-6", "Pulse time to collect them"],
                    readings_rows(results)),
             f"""

Reading 1 takes 75 % as the fraction of pulses Eve attacks; reading 2 as the chance that her
resent state gives Bob the right bit, which is 3/4 for a random-basis intercept-resend attack
on BB84 (e = 1/4) and for B92-measurement resend on B92. With the textbook test (abort on any
error in m sampled bits) Eve escapes with (1 − e)^m; e is derived in
`paper/qkd_detection.py` from the simulator's physics with the node's squashing of multi-clicks
(an honest multi-photon pulse that clicks in both bases becomes a random bit, so even the
honest ideal link shows e = {none_b92['error_per_bit']:.2%} for B92 at μ = 0.5) and agrees with
the simulated fraction. Unambiguous discrimination (`usd`) makes no errors at all: the node
sees it only as a fall of the conclusive yield per pulse, which needs
{fmt_count(usd75['bits_for_detection']) if usd75 else '—'} conclusive bits' worth of pulses at
75 % before the node's yield monitor fires with probability 1 − 10⁻⁶.

## Abort probability against sampled bits

![abort probability vs sampled bits]({img_dir_rel}/paper-detection.png)

Points: simulated blocks ({meta['blocks']} per point) with {meta['confidence']:.0%}
Clopper–Pearson intervals; lines: the analytic curve. Left of each pair, the any-error test,
1 − (1 − e)^m; right, the node's rule, basis by basis as the node judges a sample: a basis
aborts when the Serfling upper bound on its QBER (ε = {node['eps_sec']:g}, key bits =
{1 / node['sample_fraction'] - 1:.0f} × its sample) exceeds {node['qber_threshold_bb84']:.1%}
(BB84) or {node['qber_threshold_b92']:.1%} (B92), or, for BB84, when its sampled rate exceeds
Q_tol = {node.get('qber_tol', float('nan')):.1%}; a sample under {node['min_sample_size']} bits
aborts too. With k of the m sampled bits in one basis (binomial), P_abort =
1 − Σ_k P(k) P(E₁ ≤ c(k)) P(E₂ ≤ c(m − k)), c the largest error count a basis sample may hold;
the simulated points put each simulated sample through the node's own decision function. For
B92 this curve is the node's eavesdropper alarm: B92 never yields key here, and the node
still flags a B92 block whose QBER bound exceeds {node['qber_threshold_b92']:.1%}. Even an
error-free basis sample passes only from {fmt_count(clean.get('bb84'))} bits (BB84) or
{fmt_count(clean.get('b92'))} bits (B92) up — the Serfling term alone exceeds the threshold below
that — so with both bases the honest BB84 link stops aborting only past about
{fmt_count(2 * clean['bb84']) if clean.get('bb84') else '—'} sampled bits, and the B92 alarm
fires on every honest block up to about {fmt_count(2 * clean['b92']) if clean.get('b92') else '—'}:
below those sizes "abort" says nothing about Eve. For `usd`
the x axis counts the conclusive bits an honest link would have given in the same pulses, and
the analytic curve is P(Binomial(N, p_Eve) < T(N)) with the node's threshold T (ε =
{node['yield_eps']:g}, {node['yield_rel_tolerance']:.0%} calibration tolerance). Selected
points:

""",
             _table(["Attack", "Test", "m", "analytic", f"simulated [{meta['confidence']:.0%} CI]"],
                    curve_rows(results)),
             f"""

## Time and pulses to a first secret key, without Eve

{b92_key_sentence}

Every key length below is what `postprocessing.distill` granted on a simulated block (GYS
parameters, 1 GHz, ε_sec = {node['eps_sec']:g}, ε_cor = {node['eps_cor']:g}); the search doubles
the block until the key reaches the target, then interpolates. Near the finite-size threshold
the granted length swings from block to block (statistical fluctuation of the decoy and
phase-error bounds), so "pulses" is the smallest block that reached the target in this run:
good to roughly ±10 % where the search could interpolate, and only to its last doubling (a
factor 2) where the first block with key already held far more than the target. Time = pulses at 1 GHz plus the host time of `distill` here. Protocols: {', '.join(meta['first_key_cases'])} (each run only while
the node offers it; a protocol the node offers but this run does not measure is named at the end).

""",
             _table(["Protocol", "km", "Target", "Pulses", "Key bits", "Pulse time",
                     "Host time", "Total"], first_key_rows(results)),
             f"""

{"Why the node refuses B92 key — each published B92 proof and the assumption this node does not meet, as the node states them (`postprocessing.finite_key`):" if b92_refused and refusal_rows(results) else ""}

""",
             _table(["Published B92 proof", "What it assumes, and why the node does not meet it"],
                    refusal_rows(results)) if b92_refused and refusal_rows(results) else "",
             f"""

## RSA: factoring measured here, and extrapolated

{x['library_note']}

""",
             _table(["Bits", "Moduli", "Total", "Mean", "Median", "Max", "Factored",
                     "QS fit L[1/2, 1]"], rsa_rows(results)),
             f"""

![factoring time vs modulus size]({img_dir_rel}/paper-factoring.png)

The number field sieve costs L_N[1/3, (64/9)^(1/3)]; scaled from the RSA-250 record
({ex.RSA_250.core_years:g} core-years, {ex.RSA_250.bits} bits) it predicts the other record
within the factor shown below — that factor is the honest size of the extrapolation's error
bar. Sources: the CADO-NFS team's announcements of RSA-240 (December 2019: 800 core-years of
sieving + 100 of matrix) and RSA-250 (February 2020: 2450 + 250), Intel Xeon Gold 6130 at
2.1 GHz as the reference core; Boudot et al., CRYPTO 2020.

""",
             _table(["Number", "Bits", "Core-years", "NFS-scaled from RSA-250"],
                    extrapolation_rows(results)),
             f"""

## The honest reading

**What "success" means on each side.** For QKD the node's success is not breaking anything: it
is (a) noticing an eavesdropper — the block is aborted with probability ≥ 1 − ε when Eve's
disturbance exceeds what the bound tolerates — and (b) when it does not abort, handing out a key
whose distance from a perfect key is at most ε_sec = {node['eps_sec']:g} (plus ε_cor =
{node['eps_cor']:g} for correctness). {"For B92 on this node only (a) exists: it never hands out key, so the paper's B92 success is detection and nothing more. " if b92_refused else ""}For RSA, "success" is the attacker's: factoring the modulus, after which every
record encrypted under it is readable. The paper's table puts the defender's detection time
next to the attacker's factoring time; they measure different things, and neither number says
how long the freight records stay confidential. The QKD time is dominated by pulses and
processing (here {fmt_s(ir75['decision']['acquisition_s'] + ir75['decision']['host_s']) if ir75 and ir75['decision'] else '—'}
for B92 under intercept-resend on 75 % of the pulses); the factoring time grows with the
modulus ({fmt_s(rsa_last['total_s'])} for {rsa_last['count']} moduli of {rsa_last['bits']} bits
here; the paper does not state its modulus size, and its 317 s for 100 numbers matches moduli of
about {paper_bits:.0f} bits on this machine ({"between our measured sizes" if paper_bits <= rsa_last['bits'] else "by the quadratic sieve's growth beyond our largest measured size"}) — real RSA keys have 2048).

**Detection is fast and certain — against these attacks.** Eve's per-bit error is 1/4 for
intercept-resend on BB84 at 100 %, and she escapes the any-error test with (3/4)^m:
{fmt_count(bb_ir100['bits_for_detection']) if bb_ir100 else '—'} sampled bits make that ≤ 10⁻⁶,
collected in {fmt_s(bb_ir100['seconds_for_detection']) if bb_ir100 else '—'} of pulses at
{meta['detection_distance_km']:g} km. "Close to 100 %" is therefore true and unremarkable; the
paper's "75 %" changes only how many bits that takes. The unambiguous-discrimination attack
makes no errors at all and is caught only by the yield monitor, and only because this
simulated Eve does not compensate the loss: an Eve who resends multi-photon states on success
keeps Bob's yield and QBER normal (Tamaki & Lütkenhaus, PRA 69, 032316 (2004)) — the attack that
leaves B92 with laser pulses without any published security proof.

**What the paper gets wrong, measured.** B92 tolerates *less* noise than BB84, not more. The
node aborts BB84 above a QBER bound of {node['qber_threshold_bb84']:.1%} (the Shor–Preskill
threshold; a sampled rate above the link's Q_tol of {node.get('qber_tol', float('nan')):.1%}
aborts too), and flags B92 above {node['qber_threshold_b92']:.1%}, the lowest of the published
single-photon B92 thresholds: the earlier analyses give about 3.5–4.2 % (as listed by Matsumoto,
arXiv:1301.5083) and Matsumoto's own asymptotic analysis 6.5 % under depolarizing noise — all
for an ideal single-photon source, none of them near BB84's 11 %. The GYS optics alone
({meta.get('gys_misalignment', float('nan')):.1%} misalignment) give B92 a measured QBER of
{_span(b92_gys_q)} in this run{(" and the well-aligned link " + _span(b92_good_q)) if b92_good_q else ""}, where decoy
BB84 on the same GYS optics measured {_span(bb_q)}. Distance under
the node's conservative bound: {("B92 reaches no distance at all — the node refuses B92 key at every distance and on either optics (" + str(len(b92_links)) + " B92 links in this run, " + str(len(b92_cases)) + " optics × " + str(len(meta["distances_km"])) + " distances, " + str(len(b92_links_with_key)) + " with key), because no published proof covers B92 with weak coherent pulses on this hardware: the proofs need a single-photon source, or a strong phase reference that a polarization node lacks, and the unambiguous-discrimination attack with multi-photon resend keeps the yield whenever the total transmittance is at most " + f"{node.get('b92_usd_limit', float('nan')):.3f}" + ", while this node's (channel × detector efficiency) is " + f"{node.get('eta_total_0km', float('nan')):.3f}" + " even at 0 km. B92 runs for eavesdropper detection and demonstration only") if b92_refused else ("B92 gave key in " + str(len(b92_keys)) + " of " + str(len(b92_keys) + len(b92_none)) + " cases")}. Decoy BB84 on the same GYS optics {("gave a first " + " and a first ".join(target_adj(t) for t in bb_targets) + " key at " + ", ".join(f"{d:g}" for d in bb_km) + " km (out to " + f"{bb_far:g}" + " km" + (", the farthest distance run" if bb_far == max(meta["distances_km"]) else "") + "): " + "; ".join(row_text(r) for r in bb_keys)) if bb_keys else "gave no key within this run's budget"}.

**QKD does not replace authentication.** QKD needs an authenticated classical channel — the sifting, estimation, reconciliation and
hashing messages of every block are authenticated with a pre-shared or previously distilled
key — so it extends a secret, it does not create one from nothing; and it protects the link
between two nodes only, not the records at rest.

**RSA's real threat is Shor's algorithm, not the classical factoring timed here.** Scaled from
the published records, a single 1024-bit modulus needs ≈ {fmt_years(t1024['core_years']) if t1024 else '—'}
core-years and a 2048-bit one ≈ {fmt_years(t2048['core_years']) if t2048 else '—'} core-years with
the best known classical method; no timing of small moduli changes that. A large fault-tolerant
quantum computer running Shor's algorithm would instead factor in time polynomial in the size,
and anything recorded today under RSA key exchange can be decrypted then
("harvest now, decrypt later"). Freight records with a long confidentiality life (identities,
contracts, routes) are exposed to that, whatever today's factoring times; the remedies are
post-quantum key exchange (standardised ML-KEM) and, on links where it fits, QKD with a proven
bound — not a table that times detection against factoring.

## What was run, and what was not

- Detection: {meta['blocks']} simulated blocks per attack and test point, nested samples of up to
  {meta['m_max_node']} sifted bits per block (any-error test to {meta['m_max_any']}), each
  attack at 75 % and 100 % of the pulses; μ = 0.5, one intensity, ideal optics.
- First key: distances {', '.join(f'{d:g}' for d in meta['distances_km'])} km, targets
  {', '.join(str(t) for t in meta['targets_bits'])} bits, at most {meta['max_events']:.2g}
  detections per block (beyond that a row says "up to N pulses"); a protocol the node grants
  no key (B92) gets one block per link, for its QBER. Alignment from raw time tags
  is not timed (the simulator's slot numbers are used); network round trips are not modelled.
{unmeasured_line(results)}- Factoring: {', '.join(str(r['bits']) for r in results['rsa'])}-bit moduli, {results['rsa'][0]['count']}
  per size, one core, python-flint {meta['flint_version']}; larger sizes would take hours here.
- Regenerate: `make paper` (full, {meta['elapsed_s'] / 60:.0f} min here) or
  `python -m paper --quick` (seconds; used by the tests). Seed {meta['seed']}.
"""]
    return "".join(parts)
