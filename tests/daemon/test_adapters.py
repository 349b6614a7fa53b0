"""The real ports' translations: link numbers, the authentication refill rule, block params."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from daemon import config as cfg
from daemon.engine.ports import BoardParameters
from daemon.peer.auth_keys import STRIDE
from daemon.runtime import adapters
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
    plain = adapters.block_params(replace(link, protocol="bb84"), BOARD)
    assert plain.protocol == "bb84" and not plain.decoy
    b92 = adapters.block_params(replace(link, protocol="b92", calibration=cfg.Calibration(
        4.1e-4, 0.1)), BOARD)
    assert b92.protocol == "b92" and b92.expected_conclusive_per_pulse == 4.1e-4


def test_an_lt3_link_is_refused_by_the_role_factory(tmp_path):
    conf = cfg.load(example_in(tmp_path))
    conf = replace(conf, links=(replace(conf.links[0], protocol="lt3"),))
    with pytest.raises(adapters.MissingComponent, match="protocol 'lt3' is not run"):
        adapters.RoleFactory(conf)
