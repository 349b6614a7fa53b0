"""Simulated polarization controllers fed arbitrary bytes: no crash, rotation stays a rotation."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sim_backend.controls import LinkControls
from sim_backend.instruments.polarization_gp import GpPolarizationSim
from sim_backend.instruments.polarization_oz import OzEpcSim

# Lines that look like the dialects, so the fuzzer reaches the argument parsers too.
command_words = st.sampled_from([":CONT:SOP", ":CONT:ANGL", ":MEAS:SOP?", "SYST:ERR?", "*IDN?",
                                 "V1,", "V?", "V9,", ":cont:sop?", ""])
lines = st.builds(lambda w, a: (w + " " + a).encode("latin-1", "replace") + b"\n",
                  command_words, st.text(max_size=20))


def assert_rotation(m):
    assert np.allclose(m @ m.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(m), 1.0)


@given(st.lists(st.one_of(lines, st.binary(max_size=30)), max_size=12))
def test_gp_sim_survives_any_input(chunks):
    controls = LinkControls()
    sim = GpPolarizationSim(controls)
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        assert isinstance(sim.respond(buffer), bytes)
    assert_rotation(controls.controller_rotation)
    assert len(sim.errors) <= sim.ERROR_QUEUE_DEPTH


@given(st.lists(st.one_of(lines, st.binary(max_size=30)), max_size=12))
def test_epc_sim_survives_any_input(chunks):
    controls = LinkControls()
    sim = OzEpcSim(controls)
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        reply = sim.respond(buffer)
        assert reply.count(b"Done\r\n") == reply.count(b"\r\n") / 2   # every answer closes
    assert_rotation(controls.controller_rotation)
    assert all(-5000 <= v <= 5000 for v in sim.voltages_mv)
