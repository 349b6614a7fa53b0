"""Mutation list: each entry breaks one security property of the block roles on purpose
(monkeypatched here, nowhere else) and requires the matching check of block_cases -- the same
check the regular tests run -- to fail. A check that still passes under its mutation would be
a test that cannot catch the bug it is named after."""

from __future__ import annotations

import pytest

from postprocessing import finite_key as fk
from postprocessing.block import decisions
from postprocessing.block import roles as block_roles
from postprocessing.randomness import ProtocolRandom
from tests.postprocessing import block_cases as bc


def ignore_verification(mp):
    """distill (the roles) ignores the verification result."""
    mp.setattr(block_roles, "tags_match", lambda *a, **k: True)


def fixed_toeplitz_seed(mp):
    """A fixed Toeplitz seed is reused across blocks."""
    mp.setattr(block_roles, "new_pa_seed",
               lambda rng, n, ell: ProtocolRandom.deterministic_for_tests(0).bits(n + ell - 1))


def abort_wipes_nothing(mp):
    """Abort paths (and the end of a block) wipe nothing."""
    mp.setattr(block_roles._BlockRole, "_wipe_all", lambda self: None)


def b92_ceiling_dropped(mp):
    """The B92 QBER ceiling is dropped from the abort threshold."""
    mp.setattr(decisions, "qber_threshold", lambda params: params.qber_threshold)


def b92_produces_key(mp):
    """B92 produces key again (the old rule: the BB84 bound on the conclusive bits)."""
    mp.setattr(decisions, "protocol_may_yield_key", lambda protocol: True)
    mp.setattr(fk, "b92_key_length_result", lambda *a, **k: pytest.fail("not reached"))


MUTATIONS = [
    (ignore_verification, bc.check_verification_failure_stops_the_block),
    (fixed_toeplitz_seed, bc.check_toeplitz_seeds_fresh_per_block),
    (abort_wipes_nothing, bc.check_abort_wipes_everything),
    pytest.param(b92_ceiling_dropped, bc.check_b92_never_yields_key_and_flags_qber_above_ceiling,
                 marks=pytest.mark.slow),
    pytest.param(b92_produces_key, bc.check_b92_never_yields_key_and_flags_qber_above_ceiling,
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mutate,check", MUTATIONS,
                         ids=lambda f: f.__name__ if callable(f) else str(f))
def test_the_check_catches_the_mutation(mutate, check, monkeypatch):
    mutate(monkeypatch)
    with pytest.raises(AssertionError):
        check()


@pytest.mark.parametrize("check", [bc.check_verification_failure_stops_the_block,
                                   bc.check_toeplitz_seeds_fresh_per_block,
                                   bc.check_abort_wipes_everything])
def test_the_checks_pass_on_the_real_code(check):
    check()
