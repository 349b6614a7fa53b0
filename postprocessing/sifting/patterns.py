"""Alice's side, common to every protocol: her pattern bytes for the announced slots, and the
checks before she answers an announcement."""

from __future__ import annotations

import numpy as np

from postprocessing.sifting.errors import SiftError, SiftMessageError
from postprocessing.sifting.kernels import gather_window
from postprocessing.sifting.messages import SiftAnnouncement


def pattern_from_window(window, window_first_slot: int, slots) -> np.ndarray:
    """Alice's pattern bytes for ``slots`` from a window her board delivered.

    window: uint8 pattern bytes of slots [window_first_slot, window_first_slot + len(window));
    slots: int64. Raises SiftError if a slot lies outside the window (Bob announced a slot the
    board no longer holds, or never sent).
    """
    window = np.ascontiguousarray(window)
    slots = np.ascontiguousarray(slots)
    if window.ndim != 1 or window.dtype != np.uint8:
        raise SiftError(f"window: expected 1-D uint8 pattern bytes, got {window.dtype} "
                        f"{window.shape}")
    if slots.ndim != 1 or slots.dtype != np.int64:
        raise SiftError(f"slots: expected a 1-D int64 array, got {slots.dtype} {slots.shape}")
    out = np.empty(slots.size, np.uint8)
    bad = gather_window(window, np.int64(window_first_slot), slots, out)
    if bad >= 0:
        raise SiftError(f"slot {int(slots[bad])} outside the pattern window "
                        f"[{window_first_slot}, {window_first_slot + window.size})")
    return out


def _check_pattern(pattern_bytes, n: int) -> np.ndarray:
    pattern = np.asarray(pattern_bytes)
    if pattern.ndim != 1 or pattern.dtype != np.uint8 or pattern.size != n:
        raise SiftError(f"pattern_bytes: expected {n} uint8 values (one per announced slot), got "
                        f"{pattern.dtype} {pattern.shape}")
    return np.ascontiguousarray(pattern)


def checked_announcement(announcement, protocol: str, pattern_bytes) -> tuple[int, np.ndarray]:
    """Alice's checks before answering: a valid announcement of ``protocol`` and one pattern
    byte per announced slot. Returns (rows, pattern bytes)."""
    if not isinstance(announcement, SiftAnnouncement):
        raise SiftMessageError(f"expected a SiftAnnouncement, got {type(announcement).__name__}")
    announcement.validate()
    if announcement.protocol != protocol:
        raise SiftMessageError(f"announcement is for {announcement.protocol!r}, "
                               f"expected {protocol!r}")
    n = announcement.slots.size
    return n, _check_pattern(pattern_bytes, n)


def pattern_layout_error() -> SiftError:
    return SiftError("pattern_bytes: a byte uses bits 4-7 or intensity index 3; expected bit0 "
                     "value, bit1 basis, bits2-3 intensity in 0..2")
