"""Overwriting a ``bytes`` object that held key bits, before it goes back to the allocator.

The sqlite3 module hands a BLOB out as ``bytes``, which Python cannot change: freed, its key
bits would stay in the heap until the memory is reused. The store reads a lease's keys as one
BLOB per run of keys (``store._read_run``), copies them into the lease's buffer, which it wipes
as keys are taken, and then zeroes the BLOB in place with this.

Only for an object the caller made and alone holds: CPython shares the empty and one-byte
``bytes`` objects (so they are left alone here), and anyone else holding the object would see
its bytes change.
"""

from __future__ import annotations

import ctypes

# PyBytesObject: the header and the cached hash, then the bytes (ob_sval, counted in
# __basicsize__ as its one-byte terminator)
_DATA_OFFSET = bytes.__basicsize__ - 1


def wipe_bytes(data: bytes | None) -> None:
    """Zero ``data``'s bytes in place (None, and objects shorter than 2 bytes, are skipped)."""
    if data is None:
        return
    if type(data) is not bytes:
        raise TypeError(f"wipe_bytes takes bytes, not {type(data).__name__} (zero a bytearray "
                        f"by assigning to it)")
    if len(data) >= 2:
        ctypes.memset(id(data) + _DATA_OFFSET, 0, len(data))
