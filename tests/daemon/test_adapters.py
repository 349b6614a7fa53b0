"""The real ports' translations: link numbers, the authentication refill rule, block params."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from daemon import config as cfg
from daemon.engine.ports import BoardParameters
from daemon.peer.auth_keys import STRIDE
from daemon.runtime import adapters
from postprocessing.block.params import DEFAULT_FRAME_BITS
from tests.daemon.configs import example_in

BOARD = BoardParameters(1e9, 10_000, 77, (0.5, 0.1, 0.0), (0.8, 0.15, 0.05))


def test_link_number_is_the_first_four_bytes_of_the_names_sha256():
    digest = hashlib.sha256(b"alice-bob").digest()
    assert adapters.link_number("alice-bob") == int.from_bytes(digest[:4], "little")
    assert adapters.link_number("alice-bob") != adapters.link_number("alice-carol")


@pytest.mark.parametrize("key_bits,expected", [
    (0, 0), (255, 0), (256, 128), (1000, 384), (65536, 32768), (10**6, adapters.REFILL_MAX_BITS)])
def test_the_refill_takes_whole_strides_up_to_half_the_key(key_bits, expected):
    port = adapters.ChannelPort.__new__(adapters.ChannelPort)     # the rule needs no socket
    take = port.auth_refill_bits(key_bits)
    assert take == expected
    assert take % (8 * STRIDE) == 0 and take <= key_bits // 2


def test_block_params_follow_the_links_protocol_policy_and_the_board(tmp_path):
    link = cfg.load(example_in(tmp_path)).links[0]
    decoy = adapters.block_params(link, BOARD)
    assert decoy.protocol == "bb84" and decoy.decoy
    assert decoy.intensities == BOARD.intensities
    assert decoy.intensity_probabilities == BOARD.probabilities
    assert (decoy.qber_tol, decoy.eps_sec, decoy.schedule) == (
        link.policy.qber_tol, link.policy.eps_sec, link.policy.schedule)
    # a block's key is reconciled in frames (fewer round trips than one frame of the block)
    assert decoy.frame_bits == DEFAULT_FRAME_BITS
    plain = adapters.block_params(replace(link, protocol="bb84"), BOARD)
    assert plain.protocol == "bb84" and not plain.decoy
    b92 = adapters.block_params(replace(link, protocol="b92", calibration=cfg.Calibration(
        4.1e-4, 0.1)), BOARD)
    assert b92.protocol == "b92" and b92.expected_conclusive_per_pulse == 4.1e-4


def test_the_key_services_types_are_allowed_on_the_link_and_overlap_no_other():
    from daemon.keyservice.reservations import MESSAGE_TYPES
    others = adapters.LINK_TYPES - MESSAGE_TYPES
    assert MESSAGE_TYPES == frozenset(range(0x60, 0x67)) and MESSAGE_TYPES <= adapters.LINK_TYPES
    assert len(others) + len(MESSAGE_TYPES) == len(adapters.LINK_TYPES)
    assert all(t < 0x60 or t >= 0xC0 for t in others)


class _Inner:
    """The CurveZMQ channel's receive side, scripted (no socket)."""

    def __init__(self, envelopes, events):
        import asyncio
        self.envelopes, self.events = asyncio.Queue(), asyncio.Queue()
        for e in envelopes:
            self.envelopes.put_nowait(e)
        for e in events:
            self.events.put_nowait(e)

    async def recv(self):
        return await self.envelopes.get()

    async def next_event(self):
        return await self.events.get()

    async def send(self, *args):
        from daemon.peer.channel import PeerChannelError
        raise PeerChannelError("peer channel of link 1 is not running")


def test_a_diverted_channel_hands_key_service_messages_and_reconnects_to_the_service():
    import asyncio

    from daemon.peer import session as ss
    from daemon.peer.envelope import Envelope

    def env(block_id, msg_type, payload=b"p"):
        return Envelope(7, block_id, 0, msg_type, 1, payload)

    async def body():
        got, ups = [], []

        async def handler(msg_type, payload):
            got.append((msg_type, payload))
            if payload == b"boom":
                raise RuntimeError("a bug in the service")

        async def connected():
            ups.append(True)

        port = adapters.ChannelPort.__new__(adapters.ChannelPort)
        port.link = type("L", (), {"id": "alice-bob"})()
        port.number = 7
        port._tasks = []
        port._diverted, port._divert_to, port._on_connected = frozenset(), None, None
        port.channel = _Inner([env(0, 0x60, b"boom"), env(0, 0x63, b"void"), env(5, 0x60),
                               env(0, 0xF0, b"hello")],
                              [ss.PeerEvent(ss.EVENT_CONNECTED, "up", link_id=7)])
        port.divert({0x60, 0x63}, handler, connected)
        port._items = asyncio.Queue()
        port._tasks = [asyncio.create_task(port._envelopes()), asyncio.create_task(port._events())]
        to_engine = [await asyncio.wait_for(port._items.get(), 5) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectionError, match="not running"):
            await port.send_service(0x60, b"x")
        for t in port._tasks:
            t.cancel()
        await asyncio.gather(*port._tasks, return_exceptions=True)
        return got, ups, to_engine

    got, ups, to_engine = asyncio.run(body())
    # the service's failure on the first message did not stop the reader
    assert got == [(0x60, b"boom"), (0x63, b"void")] and ups == [True]
    # a key-service type on a block's id is not the service's: the engine rejects it
    assert [(e.block_id, e.msg_type) for e in to_engine] == [(5, 0x60), (0, 0xF0)]
