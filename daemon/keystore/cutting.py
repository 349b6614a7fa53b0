"""How a block's key becomes stored keys, identically at both ends.

Rule (docs/keystore.md §2): the block key is a uint8 array of 0/1 bits, the same at both ends
after verification. It is cut into ``n = len(bits) // key_size_bits`` keys; key ``i`` is bits
``[i*S, (i+1)*S)``, packed most significant bit first (bit ``i*S`` is the top bit of the key's
first byte). The ``len(bits) % S`` leftover bits are not stored. The coordinator (Alice's end)
makes one UUID per key (version 8: a random prefix per block, the key's index, 48 random bits,
all from the OS CSPRNG) and
sends them, in index order, in its PREPARE message; the participant cuts its own bits by the same rule and files them under
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


# Key IDs: RFC 9562 version 8 (custom), laid out like its version 7 with a dedicated counter,
# but with a random 48-bit prefix per block where version 7 has the clock: an ID tells whoever
# sees it (an application, the network between two applications) nothing about when its key
# was made. The key's index in its block is the counter, so a block's keys sort together and in
# order: the store's key-ID index then takes a lease's erase as a few page writes instead of one
# page per key (with secure_delete every dirtied page is rewritten; random version-4 IDs made
# the erase five times dearer). 48 random bits a key keep IDs unguessable beyond their block
# and position, and apart even if two blocks drew the same prefix.
COUNTER_BITS = 26          # keys per prefix; a longer block moves on to the next prefix
_COUNTER_LOW_BITS = 14     # the counter's bits after the variant; the 12 above fill rand_a
RANDOM_BITS = 48
_PREFIX_MASK = (1 << 48) - 1


def new_key_ids(n: int, *, entropy: bytes | None = None) -> list[uuid.UUID]:
    """``n`` fresh key IDs for one block, in key-index order (the coordinator's choice).

    ``entropy`` (6 bytes for the block's prefix, then 6 a key; default ``os.urandom``) is
    given only where IDs must be reproduced (tests, benchmarks)."""
    if n < 0:
        raise ValueError(f"{n} key IDs: expected a non-negative number")
    if n == 0:
        return []
    raw = os.urandom(6 + 6 * n) if entropy is None else bytes(entropy)
    if len(raw) != 6 + 6 * n:
        raise ValueError(f"{len(raw)} bytes of entropy for {n} key IDs: expected {6 + 6 * n}")
    flat = _layout(np.arange(n, dtype=np.uint64), int.from_bytes(raw[:6], "big"), raw[6:])
    return [uuid_of(flat[16 * k:16 * k + 16]) for k in range(n)]


_new, _set, _UUID, _UNKNOWN = object.__new__, object.__setattr__, uuid.UUID, uuid.SafeUUID.unknown


def uuid_of(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw)`` for 16 bytes known good, at half the cost: the hot paths of the
    key service make one for every key they lease, reserve or hand out. Same object state as
    the constructor leaves (``tests/daemon/keystore/test_store.py`` checks it)."""
    u = _new(_UUID)
    _set(u, "int", int.from_bytes(raw, "big"))
    _set(u, "is_safe", _UNKNOWN)
    return u


def _layout(index: np.ndarray, prefix: int, raw: bytes) -> bytes:
    """16 bytes a key: the block's prefix (+ index // 2**26, mod 2**48), version 8, the
    counter, the variant, 6 bytes of ``raw``."""
    n = len(index)
    ctr = index & np.uint64((1 << COUNTER_BITS) - 1)
    top = (np.uint64(prefix) + (index >> np.uint64(COUNTER_BITS))) & np.uint64(_PREFIX_MASK)
    rand = np.zeros((n, 8), np.uint8)
    rand[:, 2:] = np.frombuffer(raw, np.uint8).reshape(n, 6)
    both = np.empty((n, 2), ">u8")
    both[:, 0] = (top << np.uint64(16)) | np.uint64(0x8000) | (ctr >> np.uint64(_COUNTER_LOW_BITS))
    both[:, 1] = (np.uint64(0b10 << 62)
                  | ((ctr & np.uint64((1 << _COUNTER_LOW_BITS) - 1)) << np.uint64(RANDOM_BITS))
                  | rand.view(">u8").ravel().astype(np.uint64))
    return both.tobytes()


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
