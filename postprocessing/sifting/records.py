"""What sifting produces: Bob's private detections, each end's sifted record, the counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEY_BASIS = 0
"""Basis (0 = Z) from which the key is drawn; matched bits of the other basis estimate phase errors."""


@dataclass(frozen=True)
class SiftCounts:
    """What happened to Bob's events while they were turned into announced detections."""

    n_events: int = 0
    n_sync: int = 0
    n_other_channel: int = 0
    n_outside_slot: int = 0
    n_holdoff: int = 0
    n_repeat_same_detector: int = 0
    n_double_same_basis: int = 0
    n_double_cross_basis: int = 0
    n_detected_slots: int = 0
    n_inconclusive: int = 0
    n_announced: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class BobDetections:
    """Bob's private record of what he announced: one row per announced slot (kept secret)."""

    protocol: str
    slots: np.ndarray  # int64, strictly increasing
    basis: np.ndarray  # uint8 0/1 (B92: Bob's measurement basis, secret since it fixes the bit)
    bits: np.ndarray  # uint8 0/1 (B92: the conclusive key bit)
    counts: SiftCounts


@dataclass(frozen=True, eq=False)
class SiftedRecord:
    """One end's sifted key; row i matches row i of the other end's. Arrays of equal length.

    bits/basis/intensity are uint8 (basis 0 = Z, 1 = X; B92: all 0), slots int64.
    """

    bits: np.ndarray
    basis: np.ndarray
    intensity: np.ndarray
    slots: np.ndarray

    def __len__(self) -> int:
        return int(self.bits.size)


class AliceSifted(SiftedRecord):
    """Alice's sifted record."""


class BobSifted(SiftedRecord):
    """Bob's sifted record."""


@dataclass(frozen=True, eq=False)
class SiftResult:
    """Both ends of one in-process sifting exchange."""

    alice: AliceSifted
    bob: BobSifted
    counts: SiftCounts
    wire_bytes: int = field(default=0)
