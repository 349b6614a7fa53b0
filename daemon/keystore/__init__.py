"""The node's key store: durable keys (SQLite), the two-step commit with the peer, and the
lease/reserve/deliver-once API the key service builds on. See docs/keystore.md."""

from daemon.keystore.commit import LinkCommit
from daemon.keystore.cutting import DEFAULT_KEY_SIZE_BITS, cut_block_key, new_key_ids
from daemon.keystore.errors import (BlockStateError, KeyIdReused, KeyNotFound, KeyNotReserved,
                                    LeaseError, StoreCorrupt, StoreDiskFull, StoreError,
                                    StoreFull, StoreLocked, StorePermission, StoreSchemaError)
from daemon.keystore.ranges import KeyRange
from daemon.keystore.store import BlockInfo, Fill, KeyStore, Lease

__all__ = ["LinkCommit", "DEFAULT_KEY_SIZE_BITS", "cut_block_key", "new_key_ids",
           "BlockStateError", "KeyIdReused", "KeyNotFound", "KeyNotReserved", "LeaseError",
           "StoreCorrupt", "StoreDiskFull", "StoreError", "StoreFull", "StoreLocked",
           "StorePermission", "StoreSchemaError", "BlockInfo", "Fill", "KeyRange", "KeyStore",
           "Lease"]
