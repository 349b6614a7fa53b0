"""Two node daemons end to end against in-process distillation (issue 8 §7).

Events: SIMULATED by ``qkd-node sim serve --fast`` (GYS preset, 10 km, decoy BB84, 1 GHz clock)
in blocks of ``PULSES`` pulses; the simulator, both daemons and this script share the machine.

- ``node_fast``: both daemons for ``SECONDS`` s: secret bit/s end to end (link time from the
  peer's hello to the end), secret bits per pulse, CPU seconds per second of link time per node
  (utime + stime from /proc) and peak memory. Baseline, measured in the same run: the same
  acquisition (``BobAcquisition``) and the same block roles wired in one process
  (``distill.run_roles``) on blocks streamed from the same simulator with the same settings:
  secret bits per pulse, and secret bit/s for acquisition plus distillation one block after the
  other (the daemons overlap them). ``ratio`` = daemons' secret bit/s over the baseline's.
- ``node_round_trips``: the same pair with Bob behind a delay line (``PeerProxy``, below
  CurveZMQ) of 0, 1 and 10 ms round-trip time: blocks done, sifted Mbit/s of link time, secret
  bit/s, blocks in flight at the peak, peak memory.

``python -m bench.bench_node [SECONDS]`` (default 90 s per setting; about 7 minutes in all).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit, progress
from daemon.engine.acquisition import BobAcquisition, PatternSource, read_board_parameters
from drivers import registry
from postprocessing.block import AliceBlock, BlockParams, BobBlock
from postprocessing.distill import run_roles
from postprocessing.randomness import ProtocolRandom
from sim_backend.params import LinkParams
from sim_backend.serve import SimulatedPair
from tests.daemon.nodes import NODES, NodePair

BENCH = "node"
PULSES = 2_000_000_000
DISTANCE_KM = 10.0
SECONDS = 90.0
BASELINE_BLOCKS = 2
RTTS_MS = (0.0, 1.0, 10.0)
QBER_TOL = 0.06          # launch.DEMO_POLICY, which NodePair's configs use
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_pair(seconds: float, delay_s: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-node-") as d:
        with NodePair(Path(d), sim_args=("--distance-km", f"{DISTANCE_KM:g}"),
                      block_pulses=PULSES, delay_s=delay_s) as pair:
            pair.start()
            pair.wait(lambda: pair.status("bob")["state"] == "running", 60, "the link up")
            pids = {n: pair.pid(n) for n in NODES}
            cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
            s0 = pair.status("bob")
            t0 = time.monotonic()
            time.sleep(seconds)
            t = time.monotonic() - t0
            s = pair.status("bob")
            cpu = {n: (cpu_seconds(p) - cpu0[n]) / t for n, p in pids.items()}
            rss = {n: round(peak_rss_mb(p), 1) for n, p in pids.items()}
    blocks = (s["blocks_ok"] + s["blocks_aborted"]) - (s0["blocks_ok"] + s0["blocks_aborted"])
    secret = s["secret_bits"] - s0["secret_bits"]
    return {"link_seconds": round(t, 1), "blocks_ok": s["blocks_ok"] - s0["blocks_ok"],
            "blocks_done": blocks, "secret_bits": secret,
            "secret_bit_s": round(secret / t, 1),
            "secret_bits_per_pulse": secret / (blocks * PULSES) if blocks else None,
            "sifted_mbit_s": round((s["sifted_bits"] - s0["sifted_bits"]) / t / 1e6, 4),
            "in_flight_peak": s["in_flight_peak"], "qber": s["qber"],
            "cpu_s_per_s": {n: round(c, 3) for n, c in cpu.items()}, "peak_rss_mb": rss}


def baseline(n_blocks: int, seed: int) -> dict:
    """The node's acquisition and block roles in one process, one block after the other."""
    params = LinkParams.preset("gys", protocol="bb84", distance_km=DISTANCE_KM)
    acq_s = distill_s = 0.0
    secret = 0
    with SimulatedPair(params, seed=seed, realtime=False) as sim:
        boards = {e.node: registry.create(e.driver, e.url) for e in sim.endpoints()
                  if e.device == "board"}
        try:
            board = read_board_parameters(boards["alice"])
            bp = BlockParams(protocol="bb84", qber_tol=QBER_TOL, intensities=board.intensities,
                             intensity_probabilities=board.probabilities)
            acq = BobAcquisition(boards["bob"], board, PULSES)
            pattern = PatternSource(boards["alice"])
            for i in range(n_blocks):
                progress(f"baseline block {i + 1}/{n_blocks}")
                t0 = time.perf_counter()
                blk = acq.next_block()
                t1 = time.perf_counter()
                alice = AliceBlock(bp, pattern, ProtocolRandom())
                bob = BobBlock(bp, blk.slots, blk.channels, blk.valid, blk.n_pulses,
                               ProtocolRandom())
                run_roles(alice, bob)
                t2 = time.perf_counter()
                acq_s, distill_s = acq_s + t1 - t0, distill_s + t2 - t1
                secret += int(bob.outcome.key.size) if not bob.outcome.aborted else 0
                alice.outcome.key.fill(0)
                bob.outcome.key.fill(0)
            acq.stop()
        finally:
            for b in boards.values():
                b.close()
    return {"blocks": n_blocks, "secret_bits": secret,
            "secret_bits_per_pulse": secret / (n_blocks * PULSES),
            "acquisition_s": round(acq_s, 2), "distill_s": round(distill_s, 2),
            "secret_bit_s": round(secret / (acq_s + distill_s), 1)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    seconds = float(argv[0]) if argv else SECONDS
    progress(f"in-process baseline: {BASELINE_BLOCKS} blocks of {PULSES:.0e} pulses")
    base = baseline(BASELINE_BLOCKS, seed=11)
    progress(f"two daemons, {seconds:g} s")
    fast = run_pair(seconds, None)
    emit(BENCH, figure="node_fast", events=f"simulated (sim serve --fast, GYS, "
         f"{DISTANCE_KM:g} km, decoy BB84, {PULSES:.0e}-pulse blocks)", **fast,
         baseline=base, baseline_what="same acquisition and block roles in one process, "
         "blocks one after the other",
         ratio=round(fast["secret_bit_s"] / base["secret_bit_s"], 3)
         if base["secret_bit_s"] else None,
         targets={"ratio": ">= 0.9", "cpu_s_per_s": "<= 0.5 per node"})
    for rtt_ms in RTTS_MS:
        progress(f"two daemons through a {rtt_ms:g} ms round-trip delay line, {seconds:g} s")
        r = run_pair(seconds, rtt_ms / 2000)
        emit(BENCH, figure="node_round_trips", rtt_ms=rtt_ms, **r,
             target="sifted >= 20 Mbit/s at 1 ms")


if __name__ == "__main__":
    main()
