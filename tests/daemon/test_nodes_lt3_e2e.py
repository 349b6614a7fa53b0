"""LT3 end to end: ``qkd-node sim serve --protocol lt3 --preset snspd`` and two ``qkd-node run``
processes with real drivers, acquisition, LT3 block roles, CurveZMQ/Wegman-Carter channel and
SQLite stores; and a peer whose LT3 calibration differs is refused by the hello.

The simulated link is the one ``tests/postprocessing/test_distill_lt3.py`` distills in process
(2 km, 60 % detectors): LT3's bound needs ~3e8-pulse blocks there, which take tens of seconds
of simulation and distillation on this machine.
"""

from __future__ import annotations

import time

import pytest

from daemon.launch import SIM_LT3_CALIBRATION
from tests.daemon.nodes import NODES, NodePair

SIM = ("--protocol", "lt3", "--preset", "snspd")
BLOCK_PULSES = 3e8


@pytest.mark.slow
def test_lt3_two_processes_store_identical_keys(tmp_path):
    with NodePair(tmp_path, protocol="lt3", block_pulses=BLOCK_PULSES,
                  calibration=SIM_LT3_CALIBRATION, sim_args=SIM) as pair:
        pair.start()
        pair.wait(lambda: all(pair.status(n)["blocks_ok"] >= 1 for n in NODES), 400,
                  "an LT3 block stored at both ends")
        pair.drain(180)
        d = pair.digests()
        status = {n: pair.status(n) for n in NODES}
    assert d["alice"]["n_keys"] > 0 and d["alice"]["n_bits"] == 256 * d["alice"]["n_keys"]
    for k in ("n_keys", "n_bits", "ids_sha256", "bits_hmac_sha256"):
        assert d["alice"][k] == d["bob"][k], k
    assert status["alice"]["secret_bits"] == status["bob"]["secret_bits"] > 0
    for n in NODES:
        s = status[n]
        assert s["protocol"] == "lt3" and s["keys_stored"] == d[n]["n_keys"]
        assert s["blocks_aborted"] == 0, s["abort_reasons"]
        # X0 error rate (the LT3 block's QBER figure): the preset's 1 % misalignment plus half
        # of the cross-basis multi-clicks squashed to a random outcome (~5 % of detections at
        # eta mu ~ 0.2): 1-3 % expected; binomial 5 sigma on the ~1e6 X0 clicks of a block is
        # < 0.1 %, so this is a physical window, not a statistical one
        assert 0.005 < s["qber"] < 0.04
        assert s["alarms"] == {}      # a healthy link: no alarm, its control loops' included
        assert s["rejected_messages"] == 0 and s["auth_bits_used"] > 0
    for n in NODES:     # keys never reach a log
        assert "bits_hmac" not in pair.logs[n].read_text()


def test_a_peer_with_another_lt3_calibration_is_refused(tmp_path):
    with NodePair(tmp_path, fast=True, protocol="lt3",
                  calibration=SIM_LT3_CALIBRATION) as pair:
        text = pair.configs["bob"].read_text()
        assert "bob_z_probability = 0.5\n" in text
        pair.configs["bob"].write_text(text.replace("bob_z_probability = 0.5\n",
                                                    "bob_z_probability = 0.52\n"))
        pair.start()
        pair.wait(lambda: all("config" in pair.status(n)["alarms"] for n in NODES), 30,
                  "the configuration alarm at both ends")
        time.sleep(1.0)
        for n in NODES:
            s = pair.status(n)
            assert s["blocks_started"] == 0 and s["state"] == "peer configuration mismatch"
        assert pair.alive("alice") and pair.alive("bob")
