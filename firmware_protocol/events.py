"""Packing of detection events into 64-bit words, vectorised both ways.

Word layout (little-endian uint64 per event): bits 63..6 = ``timestamp_ps - t_start_ps`` (58-bit
unsigned offset from the batch's window start, about 80 h of range), bits 5..0 = channel. A
batch is therefore decoded by one shift and one mask over ``np.frombuffer`` of the payload, with
no per-event Python work.
"""

from __future__ import annotations

import numpy as np

CHANNEL_BITS = 6
CHANNEL_MASK = (1 << CHANNEL_BITS) - 1
MAX_OFFSET_PS = (1 << (64 - CHANNEL_BITS)) - 1
EVENT_WORD_BYTES = 8


def pack_event_words(t_start_ps: int, timestamps_ps: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Little-endian uint64 words ``(t - t_start_ps) << 6 | channel`` (ValueError if out of range)."""
    ts = np.asarray(timestamps_ps, dtype=np.int64)
    ch = np.asarray(channels)
    if ts.shape != ch.shape or ts.ndim != 1:
        raise ValueError(f"timestamps_ps {ts.shape} and channels {ch.shape} must be equal 1-D arrays")
    if ts.size == 0:
        return np.empty(0, dtype="<u8")
    offsets = ts - np.int64(t_start_ps)
    lo, hi = int(offsets.min()), int(offsets.max())
    if lo < 0 or hi > MAX_OFFSET_PS:
        raise ValueError(f"event offsets from t_start_ps span [{lo}, {hi}] ps; accepted range is "
                         f"[0, {MAX_OFFSET_PS}] ps")
    if ch.dtype != np.uint8:
        if ch.size and (int(ch.min()) < 0 or int(ch.max()) > CHANNEL_MASK):
            raise ValueError(f"channels must lie in [0, {CHANNEL_MASK}]")
        ch = ch.astype(np.uint8)
    elif ch.size and int(ch.max()) > CHANNEL_MASK:
        raise ValueError(f"channel {int(ch.max())} outside [0, {CHANNEL_MASK}]")
    words = offsets.view(np.uint64) << np.uint64(CHANNEL_BITS)
    words |= ch
    return words.astype("<u8", copy=False)


def unpack_event_words(t_start_ps: int, buf, n_events: int, offset: int = 0):
    """(timestamps_ps int64, channels uint8) from ``n_events`` words in ``buf`` at byte ``offset``."""
    words = np.frombuffer(buf, dtype="<u8", count=n_events, offset=offset)
    timestamps = np.empty(n_events, dtype=np.int64)
    np.right_shift(words, np.uint64(CHANNEL_BITS), out=timestamps.view(np.uint64))
    timestamps += np.int64(t_start_ps)
    # Little-endian words: the channel sits in the low byte of each 8-byte word.
    channels = np.bitwise_and(words.view(np.uint8)[::EVENT_WORD_BYTES], np.uint8(CHANNEL_MASK))
    return timestamps, channels
