"""End to end on simulated hardware: ``qkd-node sim serve`` and two ``qkd-node run`` processes
with real drivers, acquisition, block roles, CurveZMQ/Wegman-Carter channel and SQLite stores.

- decoy BB84 over 10 km: both stores end with the same key IDs holding the same bits;
- intercept-resend on every pulse: every block aborts on its QBER, nothing is stored;
- B92: blocks run and stop with no_security_proof (its key length is zero by the security
  review), nothing is stored, and status says why;
- LT3: see test_nodes_lt3_e2e.py (its own simulated link).

Each test waits for real distillation (a 2e9-pulse block takes tens of seconds here), so these
are the slow tests of the daemon.
"""

from __future__ import annotations


from postprocessing.block import MessageType
from sim_backend.params import LinkParams
from sim_backend.physics import theory
from tests.daemon.nodes import NODES, NodePair

QBER_TOL = 0.06            # launch.DEMO_POLICY: a block whose sample QBER exceeds it aborts


def test_decoy_bb84_two_processes_store_identical_keys(tmp_path):
    with NodePair(tmp_path, protocol="bb84-decoy", sim_args=("--distance-km", "10")) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["blocks_ok"] >= 1 for n in NODES), 300,
                  "a block stored at both ends")
        pair.drain(120)
        d = pair.digests()
        status = {n: pair.status(n) for n in NODES}
    assert d["alice"]["n_keys"] > 0 and d["alice"]["n_bits"] == 256 * d["alice"]["n_keys"]
    for k in ("n_keys", "n_bits", "ids_sha256", "bits_hmac_sha256"):
        assert d["alice"][k] == d["bob"][k], k
    for n in NODES:
        s = status[n]
        assert s["keys_stored"] == d[n]["n_keys"] and s["blocks_aborted"] == 0
        # the sample QBER passed the link's fixed tolerance, and the pool took its refill
        assert 0 < s["qber"] <= QBER_TOL and s["auth_bits_used"] > 0
        # a healthy link raises no alarm at all, its control loops' included
        assert s["alarms"] == {}
        assert s["rejected_messages"] == 0
    # Bob's loops ran on the simulated devices: the switch judged light on its port
    loops = status["bob"]["control"]["loops"]
    assert status["bob"]["control"]["healthy"]
    assert {"alice-bob.detector", "alice-bob.switch", "alice-bob.polarization"} <= set(loops)
    assert loops["alice-bob.switch"]["state"] == "ok"
    assert loops["alice-bob.detector"]["state"] == "ok"
    for n in NODES:     # keys never reach a log: only counts, IDs of blocks and figures
        assert "bits_hmac" not in pair.logs[n].read_text()


def test_intercept_resend_aborts_every_block_and_stores_nothing(tmp_path):
    with NodePair(tmp_path, protocol="bb84-decoy",
                  sim_args=("--distance-km", "10", "--eve", "intercept-resend",
                            "--eve-fraction", "1")) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["blocks_aborted"] >= 2 for n in NODES), 300,
                  "two blocks aborted at both ends")
        pair.drain(120)
        d = pair.digests()
        status = {n: pair.status(n) for n in NODES}
    for n in NODES:
        s = status[n]
        assert s["blocks_ok"] == 0 and s["keys_stored"] == 0 and d[n]["n_keys"] == 0
        assert all("qber" in reason for reason in s["abort_reasons"]), s["abort_reasons"]
        # intercept-resend on every pulse: 25 % errors in theory, far above the tolerance
        assert s["qber"] > 0.2


def test_b92_runs_stores_nothing_and_status_says_why(tmp_path):
    honest = LinkParams.preset("gys", protocol="b92", distance_km=5.0, misalignment=0.002)
    expected = theory.expected_link(honest)      # what a calibration run would measure
    calibration = {"expected_conclusive_per_pulse":
                   expected.detection_probability * expected.conclusive_fraction,
                   "bob_efficiency": 0.1}
    with NodePair(tmp_path, protocol="b92", block_pulses=1.5e8, calibration=calibration,
                  sim_args=("--protocol", "b92", "--distance-km", "5",
                            "--misalignment", "0.002")) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["blocks_aborted"] >= 1 for n in NODES), 300,
                  "a B92 block run at both ends")
        pair.drain(120)
        d = pair.digests()
        status = {n: pair.status(n) for n in NODES}
    for n in NODES:
        s = status[n]
        assert s["blocks_ok"] == 0 and d[n]["n_keys"] == 0
        assert set(s["abort_reasons"]) == {"no_security_proof"}, s["abort_reasons"]
        assert "no published security proof" in s["note"]
        assert s["qber"] is not None and s["qber"] < 0.11


def test_a_tampered_cascade_message_aborts_the_real_block_at_both_ends(tmp_path):
    """An attacker inside CurveZMQ flips a bit of one of Bob's parity requests: Alice rejects
    it (bad tag), the block aborts at both ends, the next blocks are stored alike."""
    with NodePair(tmp_path, relay=True, sim_args=("--distance-km", "10")) as pair:
        pair.relay.inject("to_alice", "tamper", msg_type=int(MessageType.PARITY_REQUEST))
        pair.start()
        pair.wait(lambda: all(pair.status(n)["blocks_aborted"] >= 1 for n in NODES), 300,
                  "the tampered block aborted at both ends")
        pair.wait(lambda: all(pair.status(n)["blocks_ok"] >= 1 for n in NODES), 300,
                  "a block stored after it")
        pair.drain(120)
        d = pair.digests()
        status = {n: pair.status(n) for n in NODES}
    (done,) = pair.relay.done["to_alice"]
    assert done[0] == "tamper" and done[2] == MessageType.PARITY_REQUEST
    assert status["alice"]["abort_reasons"] == {"rejected_message": 1}
    assert status["bob"]["abort_reasons"] == {"peer: rejected_message": 1}
    assert f"block {done[1]} aborted" in pair.logs["bob"].read_text()
    assert d["alice"]["n_keys"] > 0
    for k in ("n_keys", "n_bits", "ids_sha256", "bits_hmac_sha256"):
        assert d["alice"][k] == d["bob"][k], k
