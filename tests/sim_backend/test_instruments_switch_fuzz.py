"""Simulated switches fed arbitrary bytes: they never crash and only ever move to valid ports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim_backend.controls import LinkControls
from sim_backend.instruments.switch_agiltron import AgiltronSwitchSim
from sim_backend.instruments.switch_dicon import DiconMemsSim


@given(st.lists(st.binary(max_size=64), max_size=10))
def test_dicon_sim_survives_any_bytes(chunks):
    controls = LinkControls()
    sim = DiconMemsSim(controls, n_ports=4)
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        reply = sim.respond(buffer)
        assert isinstance(reply, bytes)
        assert b"\n" not in buffer                   # every complete line was consumed
        assert reply == b"" or reply.endswith(b"\r\n")
    assert 1 <= controls.switch_port <= 4


@given(st.lists(st.binary(max_size=32), max_size=10))
def test_agiltron_sim_survives_any_bytes(chunks):
    controls = LinkControls()
    sim = AgiltronSwitchSim(controls, n_ports=4)
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        reply = sim.respond(buffer)
        assert len(reply) % 4 == 0 and len(buffer) < 4
    assert 1 <= controls.switch_port <= 4


@given(st.integers(0, 255), st.binary(max_size=8))
def test_agiltron_resynchronises_after_noise(port_byte, noise):
    controls = LinkControls()
    sim = AgiltronSwitchSim(controls, n_ports=8)
    noise = noise.replace(b"\x01", b"")              # noise without a start byte
    reply = sim.respond(bytearray(noise + b"\x01\x12\x00\x03"))
    assert reply == b"\x01\x12\x00\x03" and controls.switch_port == 3
