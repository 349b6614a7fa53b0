"""The wire facts agree with each other and with the board's byte checks (SPEC.md section 3)."""

import numpy as np

from firmware_protocol import first_invalid_pattern_byte
from firmware_protocol import wire_facts as wf


def test_pattern_fields_tile_the_byte_without_overlap():
    fields = (wf.PATTERN_VALUE_BIT, wf.PATTERN_BASIS_BIT, wf.PATTERN_INTENSITY_MASK,
              wf.PATTERN_RESERVED_BITS)
    assert sum(fields) == 0xFF
    for i, a in enumerate(fields):
        for b in fields[i + 1:]:
            assert a & b == 0
    assert wf.PATTERN_BASIS_BIT == 1 << wf.PATTERN_BASIS_SHIFT
    assert wf.PATTERN_INTENSITY_MASK >> wf.PATTERN_INTENSITY_SHIFT == 0b11
    assert wf.N_PATTERN_BYTES == wf.PATTERN_RESERVED_BITS & -wf.PATTERN_RESERVED_BITS


def test_first_invalid_pattern_byte_follows_the_layout():
    # each byte alone: invalid exactly when it uses reserved bits or intensity index 3
    for p in range(256):
        index = (p & wf.PATTERN_INTENSITY_MASK) >> wf.PATTERN_INTENSITY_SHIFT
        invalid = bool(p & wf.PATTERN_RESERVED_BITS) or index > wf.PATTERN_MAX_INTENSITY_INDEX
        got = first_invalid_pattern_byte(np.array([0, p], np.uint8))
        assert got == (1 if invalid else -1), p


def test_detector_channels_decode_like_pattern_bytes():
    # a detector channel's basis and bit sit where the pattern byte keeps basis and value
    states = {wf.CHANNEL_H: (0, 0), wf.CHANNEL_V: (0, 1), wf.CHANNEL_D: (1, 0),
              wf.CHANNEL_A: (1, 1)}
    assert sorted(states) == list(range(wf.N_DETECTORS))
    for c, (basis, bit) in states.items():
        assert (c & wf.PATTERN_BASIS_BIT) >> wf.PATTERN_BASIS_SHIFT == basis
        assert c & wf.PATTERN_VALUE_BIT == bit
    assert wf.SYNC_CHANNEL >= wf.N_DETECTORS
    assert wf.MODULATOR_DRIVE_MIN_V < wf.MODULATOR_DRIVE_MAX_V
