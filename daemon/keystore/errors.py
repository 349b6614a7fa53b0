"""Typed key-store errors: one line each, naming the store file, never key material.

The engine and the key service branch on the type (a full store pauses distillation; a missing
or unreserved key becomes a 400/401 for a client); operators read the message.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every key-store error."""


class StoreCorrupt(StoreError):
    """The file is not a key store or fails SQLite's integrity check."""


class StoreLocked(StoreError):
    """Another process holds the store (two daemons on one file)."""


class StorePermission(StoreError):
    """The file or its directory cannot be opened or written with our permissions."""


class StoreDiskFull(StoreError):
    """The file system refused to grow the store."""


class StoreSchemaError(StoreError):
    """The file's schema version is newer than this program knows."""


class StoreFull(StoreError):
    """The configured capacity (keys or bits) would be exceeded: pause distillation."""


class BlockStateError(StoreError):
    """A block operation does not fit the block's recorded state (e.g. commit of a discarded block)."""


class KeyIdReused(StoreError):
    """A key ID offered for storage has been seen before: an ID maps to one bit string forever."""


class KeyNotFound(StoreError):
    """A requested key ID is not in the store (never stored, already delivered, erased or expired)."""

    def __init__(self, message: str, key_ids: list | None = None):
        super().__init__(message)
        self.key_ids = list(key_ids or [])


class KeyNotReserved(StoreError):
    """A key exists but is not reserved for the caller (ETSI 014 answers 401)."""

    def __init__(self, message: str, key_ids: list | None = None):
        super().__init__(message)
        self.key_ids = list(key_ids or [])


class LeaseError(StoreError):
    """A lease operation names an unknown or finished lease, or a key outside it."""
