"""Request bodies of the key service, with the ETSI field names and their limits.

ETSI GS QKD 014 (status, enc_keys, dec_keys) and GS QKD 004 (open_connect, get_key, close)
carried over ZeroMQ instead of HTTPS/their API; field names are the standards' own so a client
written against either document reads naturally. Unknown fields are refused: a misspelt
``numbr`` must not silently become the default of 1.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from msgspec import Meta

SaeId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]
KeyStreamId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
MAX_KEY_IDS = 1024
MAX_NUMBER = 1 << 20
MAX_SIZE_BITS = 1 << 20
MAX_EXTENSIONS = 16


class _Body(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class StatusRequest(_Body):
    slave_SAE_ID: SaeId


class EncKeysRequest(_Body):
    slave_SAE_ID: SaeId
    number: Annotated[int, Meta(ge=1, le=MAX_NUMBER)] = 1
    size: Annotated[int, Meta(ge=1, le=MAX_SIZE_BITS)] | None = None
    additional_slave_SAE_IDs: Annotated[list[SaeId], Meta(max_length=64)] = []
    extension_mandatory: Annotated[list[dict[str, Any]], Meta(max_length=MAX_EXTENSIONS)] = []
    extension_optional: Annotated[list[dict[str, Any]], Meta(max_length=MAX_EXTENSIONS)] = []


class KeyIdRef(_Body):
    key_ID: uuid.UUID


class DecKeysRequest(_Body):
    master_SAE_ID: SaeId
    key_IDs: Annotated[list[KeyIdRef], Meta(min_length=1, max_length=MAX_KEY_IDS)]


class QoS(_Body):
    """ETSI 004 QoS. key_chunk_size in bytes; bps in bit/s; jitter, timeout in ms; TTL in s."""

    key_chunk_size: Annotated[int, Meta(ge=1, le=MAX_SIZE_BITS // 8)]
    max_bps: Annotated[int, Meta(ge=0)] = 0
    min_bps: Annotated[int, Meta(ge=0)] = 0
    jitter: Annotated[int, Meta(ge=0)] = 0
    priority: Annotated[int, Meta(ge=0, le=255)] = 0
    timeout: Annotated[int, Meta(ge=0, le=3_600_000)] = 0
    TTL: Annotated[int, Meta(ge=0, le=31_536_000)] = 0
    metadata_mimetype: Annotated[str, Meta(max_length=64)] = "application/json"


class OpenConnectRequest(_Body):
    source: SaeId
    destination: SaeId
    qos: QoS
    key_stream_id: KeyStreamId | None = None


class GetKeyRequest(_Body):
    key_stream_id: KeyStreamId
    index: Annotated[int, Meta(ge=0, le=(1 << 53))]
    metadata_size: Annotated[int, Meta(ge=0, le=65536)] = 1024


class CloseRequest(_Body):
    key_stream_id: KeyStreamId
