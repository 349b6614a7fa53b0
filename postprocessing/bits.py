"""Bit-array conventions shared by the post-processing stages.

Unpacked keys are ``uint8`` arrays holding one bit (0 or 1) per byte: every stage takes and
returns this layout. Packed bits, where a stage or a wire message needs them, use
``np.packbits`` big-endian bit order (the first bit is the most significant bit of byte 0) and
zero padding in the last byte.
"""

from __future__ import annotations

import numpy as np


class BitsError(ValueError):
    """An array is not in the unpacked-bit or packed-bit layout a stage expects."""


def check_bits(bits, name: str = "bits") -> np.ndarray:
    """Return ``bits`` as a contiguous uint8 0/1 array, or raise BitsError naming the fault."""
    arr = np.asarray(bits)
    if arr.ndim != 1:
        raise BitsError(f"{name}: expected a 1-D array of bits, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_ or (np.issubdtype(arr.dtype, np.integer) and arr.size == 0):
            arr = arr.astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer):
            if arr.size and (arr.min() < 0 or arr.max() > 1):
                raise BitsError(f"{name}: values must be 0 or 1")
            arr = arr.astype(np.uint8)
        else:
            raise BitsError(f"{name}: expected an integer or bool array, got dtype {arr.dtype}")
    elif arr.size and arr.max() > 1:
        # Never echo the offending value: it may be key material.
        raise BitsError(f"{name}: values must be 0 or 1")
    return np.ascontiguousarray(arr)


def packed_len(n_bits: int) -> int:
    """Number of bytes holding ``n_bits`` packed bits."""
    return (int(n_bits) + 7) // 8


def pack_bits(bits) -> np.ndarray:
    """Unpacked uint8 0/1 -> packed uint8, big-endian bit order, zero padding."""
    return np.packbits(check_bits(bits), bitorder="big")


def unpack_bits(packed, n_bits: int, *, strict_padding: bool = True) -> np.ndarray:
    """Packed uint8 (big-endian bit order) -> the first ``n_bits`` as unpacked uint8 0/1.

    With ``strict_padding`` the unused low bits of the last byte must be zero, so that a
    message has exactly one encoding (a decoder can then reject tampered padding).
    """
    packed = np.asarray(packed)
    if packed.ndim != 1 or packed.dtype != np.uint8:
        raise BitsError(f"packed bits: expected a 1-D uint8 array, got {packed.dtype} {packed.shape}")
    n_bits = int(n_bits)
    if n_bits < 0 or packed.size != packed_len(n_bits):
        raise BitsError(f"packed bits: {packed.size} bytes cannot hold exactly {n_bits} bits "
                        f"(need {packed_len(max(n_bits, 0))})")
    if strict_padding and n_bits % 8 and packed[-1] & ((1 << (8 - n_bits % 8)) - 1):
        raise BitsError("packed bits: non-zero padding after the last bit")
    return np.unpackbits(packed, count=n_bits, bitorder="big")
