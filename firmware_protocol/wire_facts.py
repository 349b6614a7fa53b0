"""Facts of the host<->board wire that other layers compute with, defined here once.

The board's channel numbers, the layout of Alice's pattern byte and the modulator's drive range
are fixed by the board (SPEC.md section 3, "Channels", "Pattern byte" and ModulatorCalibration).
The simulator produces them, the drivers check against them and the post-processing kernels
decode them; each imports them from here, so a change to the board is a change in one place.
Plain integers and floats only: numba kernels read them as compile-time constants.
"""

# -- Bob's time-tagger channels (the channel field of an event word) ----------------------------
CHANNEL_H, CHANNEL_V, CHANNEL_D, CHANNEL_A = 0, 1, 2, 3
"""Bob's four single-photon detectors: H and V behind the + analyser, D and A behind x. A
detector channel c names its outcome: basis ``c >> 1`` (0 = Z/+, 1 = X/x), bit ``c & 1``,
the same bit positions as the value and basis of Alice's pattern byte."""

N_DETECTORS = 4
"""Channels 0 .. N_DETECTORS - 1 are detectors; any other channel is not a detection."""

SYNC_CHANNEL = 7
"""Channel on which Bob's time tagger reports Alice's sync pulses."""

# -- Alice's pattern byte (one per slot) ---------------------------------------------------------
PATTERN_VALUE_BIT = 0x01
"""Bit 0: the value (BB84: the bit in the chosen basis; B92: 0 = |H>, 1 = |D>)."""

PATTERN_BASIS_BIT = 0x02
PATTERN_BASIS_SHIFT = 1
"""Bit 1: the basis (0 = Z / rectilinear +, 1 = X / diagonal x; unused in B92)."""

PATTERN_INTENSITY_SHIFT = 2
PATTERN_INTENSITY_MASK = 0x0C
"""Bits 2-3: the intensity index (0 = signal mu, 1 = decoy nu1, 2 = decoy nu2, the weakest)."""

PATTERN_MAX_INTENSITY_INDEX = 2
"""Largest valid intensity index; index 3 is invalid."""

PATTERN_RESERVED_BITS = 0xF0
"""Bits 4-7: always zero."""

N_PATTERN_BYTES = 16
"""Pattern bytes with the reserved bits clear (including the invalid intensity index 3)."""

# -- Alice's polarization modulator ---------------------------------------------------------------
MODULATOR_DRIVE_MIN_V = 0.0
MODULATOR_DRIVE_MAX_V = 10.0
"""Drive range a board accepts for each state (a LiNbO3 modulator's V_pi is a few volts)."""
