"""How a block's key becomes stored keys, identically at both ends.

Rule (docs/keystore.md §2): the block key is a uint8 array of 0/1 bits, the same at both ends
after verification. It is cut into ``n = len(bits) // key_size_bits`` keys; key ``i`` is bits
``[i*S, (i+1)*S)``, packed most significant bit first (bit ``i*S`` is the top bit of the key's
first byte). The ``len(bits) % S`` leftover bits are not stored. The coordinator (Alice's end)
draws one random UUID (version 4, from the OS CSPRNG) per key and sends them, in index order,
in its PREPARE message; the participant cuts its own bits by the same rule and files them under
those IDs. So an ID names the same bits at both ends by construction, and nothing derived from
the key bits ever crosses the wire.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

DEFAULT_KEY_SIZE_BITS = 256
MIN_KEY_SIZE_BITS = 8
MAX_KEY_SIZE_BITS = 1 << 16


def check_key_size(key_size_bits: int) -> int:
    """Validate a key size: a multiple of 8 in [8, 65536] (ETSI 014 sizes are whole bytes)."""
    if (not isinstance(key_size_bits, (int, np.integer)) or isinstance(key_size_bits, bool)
            or not MIN_KEY_SIZE_BITS <= key_size_bits <= MAX_KEY_SIZE_BITS
            or key_size_bits % 8):
        raise ValueError(f"key size {key_size_bits!r} bits: expected a multiple of 8 in "
                         f"[{MIN_KEY_SIZE_BITS}, {MAX_KEY_SIZE_BITS}]")
    return int(key_size_bits)


def keys_in_block(n_bits: int, key_size_bits: int) -> int:
    """Number of whole keys the rule cuts from ``n_bits`` bits."""
    return int(n_bits) // check_key_size(key_size_bits)


def new_key_ids(n: int) -> list[uuid.UUID]:
    """``n`` fresh version-4 UUIDs from ``os.urandom`` (the coordinator's choice of key IDs)."""
    raw = os.urandom(16 * n)
    return [uuid.UUID(bytes=raw[16 * i:16 * i + 16], version=4) for i in range(n)]


def cut_block_key(bits: np.ndarray, key_size_bits: int, key_ids: list[uuid.UUID]
                  ) -> tuple[list[tuple[uuid.UUID, memoryview]], np.ndarray]:
    """Cut ``bits`` into ``len(key_ids)`` keys by the rule above.

    Returns the keys as (ID, view into one packed array) and that array: store the keys, then
    wipe the array (``fill(0)``) — the views are not copies, so no unwipeable ``bytes`` of key
    material is left behind. The caller also wipes ``bits``. Raises ValueError when the number
    of IDs is not the number of whole keys in ``bits`` (the participant then refuses the block).
    """
    size = check_key_size(key_size_bits)
    bits = np.asarray(bits)
    if bits.ndim != 1 or bits.dtype != np.uint8:
        raise ValueError(f"block key is {bits.dtype} of shape {bits.shape}: expected a 1-D "
                         f"uint8 array of 0/1 bits")
    n = len(bits) // size
    if len(key_ids) != n:
        raise ValueError(f"{len(key_ids)} key IDs for a {len(bits)}-bit block key: the rule "
                         f"cuts exactly {n} keys of {size} bits")
    packed = np.packbits(bits[:n * size])
    view = memoryview(packed)
    step = size // 8
    return [(key_ids[i], view[i * step:(i + 1) * step]) for i in range(n)], packed
