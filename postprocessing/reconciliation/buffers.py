"""Memory for the roles' per-batch state, reused from one batch to the next.

A role holds tens of MB per batch (Bob's split-tree knowledge is n_passes bytes per bit,
Alice's prefix parities as much again). Fresh numpy memory costs one page fault per 4 KiB page
on first write: measured 25-300 ms for 180 MB here, against ~5 ms to zero the same memory once
it is resident. So each role takes its arrays from a process-wide ``BufferPool`` through an
``Arena`` and gives them back when the role object is garbage-collected; a node reconciling
batch after batch then works in pages that are already mapped.

Arrays from ``Arena.empty`` hold stale bytes of an earlier batch: callers write before they
read, or use ``Arena.zeros``. Arrays that hold key bits or values derived from them (the
reordered frames, their per-pass copies and prefix parities) are registered with
``Arena.wipe_on_release`` and zeroed before their memory goes back to the pool, so a finished
batch leaves no key material in pooled memory.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

MAX_POOLED_BYTES = 1 << 30  # free buffers kept beyond this are left to the allocator
MIN_POOLED_BYTES = 1 << 16  # smaller arrays come from the allocator's heap without faults


class BufferPool:
    """Free raw byte buffers, handed out best fit (at most twice the size asked for)."""

    def __init__(self, max_bytes: int = MAX_POOLED_BYTES):
        self._free: list[np.ndarray] = []
        self._bytes = 0
        self._max = max_bytes
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            best = -1
            for i, buf in enumerate(self._free):
                if nbytes <= buf.nbytes <= 2 * nbytes and (
                        best < 0 or buf.nbytes < self._free[best].nbytes):
                    best = i
            if best >= 0:
                buf = self._free.pop(best)
                self._bytes -= buf.nbytes
                return buf
        return np.empty(nbytes, dtype=np.uint8)

    def give(self, buffers: list) -> None:
        with self._lock:
            for buf in buffers:
                if self._bytes + buf.nbytes <= self._max:
                    self._free.append(buf)
                    self._bytes += buf.nbytes
            buffers.clear()

    @property
    def pooled_bytes(self) -> int:
        return self._bytes


POOL = BufferPool()


def _release(pool: BufferPool, raw: list, wipe: list) -> None:
    for view in wipe:
        view.fill(0)
    wipe.clear()
    pool.give(raw)


class Arena:
    """Arrays of one owner (a role object), returned to ``pool`` when the owner is collected.

    Nothing else may keep a view of these arrays: results leave the roles as copies."""

    def __init__(self, owner, pool: BufferPool = POOL):
        self._pool = pool
        self._raw: list[np.ndarray] = []
        self._wipe: list[np.ndarray] = []
        weakref.finalize(owner, _release, pool, self._raw, self._wipe)

    def wipe_on_release(self, *views: np.ndarray) -> None:
        """Zero these arrays (views of this arena's memory) before it returns to the pool."""
        self._wipe.extend(views)

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in np.atleast_1d(shape))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < MIN_POOLED_BYTES:
            return np.empty(shape, dtype=dtype)
        raw = self._pool.take(nbytes)
        self._raw.append(raw)
        return raw[:nbytes].view(dtype).reshape(shape)

    def zeros(self, shape, dtype) -> np.ndarray:
        out = self.empty(shape, dtype)
        out.fill(0)
        return out
