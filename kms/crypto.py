"""Record ciphers: one-time pad with a one-time Poly1305 tag, and AES-256-GCM.

One-time pad layout of a key: the first 32 bytes key a Poly1305 tag (a one-time MAC, so the
record's integrity is as unconditional as its secrecy), the rest is the pad; a record may be
at most ``len(key) - 32`` bytes and the pad is never reused. AES-256-GCM takes the first 32
bytes of a key and a fresh 96-bit nonce from ``secrets`` for every record; the ciphertext is
``nonce || ct || tag``. Both bind ``aad`` (the key ID and the record's context), so a ciphertext
cannot be replayed under another key ID or service.
"""

from __future__ import annotations

import hmac
import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

OTP = "otp"
AES_GCM = "aes-256-gcm"
ALGORITHMS = (OTP, AES_GCM)
OTP_MAC_BYTES = 32
TAG_BYTES = 16
AES_KEY_BYTES = 32
NONCE_BYTES = 12


class CipherError(Exception):
    """A record could not be sealed or opened (size, algorithm or authentication)."""


def wipe(buf: bytearray | memoryview) -> None:
    """Overwrite a key buffer with zeros (Python's bytes are immutable: keys live in these)."""
    buf[:] = bytes(len(buf))


def otp_capacity(key_len: int) -> int:
    """The longest record a one-time-pad key of ``key_len`` bytes protects."""
    return max(0, key_len - OTP_MAC_BYTES)


def _xor(data: bytes, pad: memoryview) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad[:n], "little")).to_bytes(
        n, "little")


def _otp_tag(key: bytearray, body: bytes, aad: bytes) -> bytes:
    # Poly1305 over a length-prefixed aad and body: one tag per key, never reused.
    msg = len(aad).to_bytes(8, "little") + aad + body
    return Poly1305.generate_tag(bytes(key[:OTP_MAC_BYTES]), msg)


def seal(algorithm: str, key: bytearray, plaintext: bytes, aad: bytes = b"") -> bytes:
    if algorithm == OTP:
        if len(plaintext) > otp_capacity(len(key)):
            raise CipherError(f"one-time pad: a record of {len(plaintext)} bytes needs a key of "
                              f"at least {len(plaintext) + OTP_MAC_BYTES} bytes, "
                              f"this key has {len(key)}")
        body = _xor(plaintext, memoryview(key)[OTP_MAC_BYTES:])
        return body + _otp_tag(key, body, aad)
    if algorithm == AES_GCM:
        if len(key) < AES_KEY_BYTES:
            raise CipherError(f"AES-256-GCM needs a key of {AES_KEY_BYTES} bytes, "
                              f"this key has {len(key)}")
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(bytes(key[:AES_KEY_BYTES])).encrypt(nonce, plaintext, aad)
    raise CipherError(f"unknown algorithm {algorithm!r}; accepted: {', '.join(ALGORITHMS)}")


def open_sealed(algorithm: str, key: bytearray, sealed: bytes, aad: bytes = b"") -> bytes:
    if algorithm == OTP:
        if len(sealed) < TAG_BYTES or len(sealed) - TAG_BYTES > otp_capacity(len(key)):
            raise CipherError("one-time pad: ciphertext length does not fit the key")
        body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        if not hmac.compare_digest(_otp_tag(key, body, aad), tag):
            raise CipherError("record authentication failed (tag does not match)")
        return _xor(body, memoryview(key)[OTP_MAC_BYTES:])
    if algorithm == AES_GCM:
        if len(sealed) < NONCE_BYTES + TAG_BYTES or len(key) < AES_KEY_BYTES:
            raise CipherError("AES-256-GCM: ciphertext too short or key too small")
        try:
            return AESGCM(bytes(key[:AES_KEY_BYTES])).decrypt(sealed[:NONCE_BYTES],
                                                              sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise CipherError("record authentication failed (tag does not match)") from None
    raise CipherError(f"unknown algorithm {algorithm!r}; accepted: {', '.join(ALGORITHMS)}")


def login_proof(key: bytearray, challenge: bytes, terminal_id: str) -> bytes:
    """What a terminal sends to log in: HMAC-SHA256 of the challenge under its next key."""
    return hmac.new(bytes(key), b"qkd-kms login\0" + terminal_id.encode() + b"\0" + challenge,
                    hashlib.sha256).digest()
