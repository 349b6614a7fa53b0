"""Keys named by their place in a block instead of one ID each (sans-I/O).

When node A issues keys it leased, it tells node B which of B's copies to reserve for the slave
SAE. Naming them as index ranges of a block keeps that message and B's write to a few bytes
and one row per thousand keys; the digest makes B reserve exactly the keys A issued or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class KeyRange:
    """Keys the peer issued, named by place instead of by ID: the ``n_keys`` keys of block
    ``block_id`` with an index in ``lo..hi`` that the issuer may issue (every other index
    between is the other end's key, or one erased before). ``digest`` binds the range to
    exactly those keys: ``KeyRange.digest_of`` their IDs in index order."""
    block_id: int
    lo: int
    hi: int
    n_keys: int
    digest: bytes

    DIGEST_BYTES = 8    # a check against a peer's bug, not an adversary (the channel is
    #                     authenticated): 2^-64 that a different set of keys passes

    @staticmethod
    def digest_of(key_ids: Iterable[bytes]) -> bytes:
        return hashlib.blake2b(b"".join(key_ids), digest_size=KeyRange.DIGEST_BYTES).digest()

    def check(self) -> None:
        if (not isinstance(self.block_id, int) or not 0 <= self.block_id < 1 << 63
                or not 0 <= self.lo <= self.hi or not 1 <= self.n_keys <= self.hi - self.lo + 1
                or len(self.digest) != self.DIGEST_BYTES):
            raise ValueError(f"key range {self.block_id}:{self.lo}..{self.hi} of "
                             f"{self.n_keys} keys is not a valid range")
