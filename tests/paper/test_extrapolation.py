"""NFS extrapolation: the L-ratio scaling and the published anchors."""

from __future__ import annotations

import math

import pytest

from paper import extrapolation as ex


def test_anchor_reproduces_itself():
    assert ex.nfs_core_years(ex.RSA_250.bits) == pytest.approx(ex.RSA_250.core_years)


def test_rsa240_predicted_within_the_o1_spread():
    # L-ratio scaling drops o(1); the two records, 34 bits apart, must agree within a factor 2
    ratio = ex.nfs_core_years(ex.RSA_240.bits) / ex.RSA_240.core_years
    assert 0.5 < ratio < 2.0


def test_l_function_by_hand_at_1024_bits():
    x = 1024 * math.log(2)
    by_hand = (64 / 9) ** (1 / 3) * x ** (1 / 3) * math.log(x) ** (2 / 3)
    assert ex.log_l(1024, 1 / 3, ex.NFS_C) == pytest.approx(by_hand)


def test_cost_grows_with_size():
    years = [ex.nfs_core_years(b) for b in (512, 768, 1024, 2048)]
    assert years == sorted(years) and years[-1] / years[-2] > 1e6


def test_qs_fit_recovers_its_constant():
    pts = [(b, ex.qs_seconds(b, -20.0)) for b in (100, 140, 180)]
    assert ex.qs_fit(pts) == pytest.approx(-20.0)
