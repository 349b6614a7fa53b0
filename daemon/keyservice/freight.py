"""A freight record sent from site A to site B under keys from two nodes: the client side of
issue 10's example, shared by ``examples/freight_records.py`` and ``qkd-node demo-nodes``.

At site A a dispatcher (the master SAE) asks its node for keys for the recipient (the slave
SAE) and encrypts a freight record — waybill, driver identity, cargo, position — once with a
one-time pad and once with AES-256-GCM. Only the key IDs, the ciphertexts and the nonce cross
to site B, where the recipient fetches the same keys by ID from its own node and decrypts.
Key bytes live in bytearrays that are wiped once used; nothing here returns or logs a key.
"""

from __future__ import annotations

import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

RECORD = {
    "waybill": "WB-2026-0412-7781",
    "driver": {"name": "J. Novak", "licence": "CZ-D-5512093"},
    "cargo": {"description": "pharmaceuticals, 2 pallets", "temperature_c": 4.0},
    "position": {"lat": 50.0755, "lon": 14.4378, "time": "2026-12-02T17:04:00Z"},
}


def otp_xor(data: bytes, pad: bytes) -> bytes:
    if len(pad) < len(data):
        raise ValueError(f"one-time pad of {len(pad)} bytes is shorter than {len(data)}")
    return bytes(a ^ b for a, b in zip(data, pad))


def send_and_receive(site_a, site_b, *, sender: str = "dispatcher",
                     recipient: str = "recipient", record: dict = RECORD) -> dict:
    """Encrypt at A, decrypt at B (``site_a``/``site_b``: ``KeyClient``s of the dispatcher at
    node A and the recipient at node B); return what each step did, without key material.

    The one-time pad is as long as the record: a node hands out keys of its own key size
    (``status`` says which), so the pad is several keys end to end, each used once."""
    plaintext = json.dumps(record, sort_keys=True).encode()
    key_bytes = site_a.status(recipient)["key_size"] // 8
    pads = site_a.enc_keys(recipient, number=-(-len(plaintext) // key_bytes))
    [aes] = site_a.enc_keys(recipient, number=1, size=256)
    pad = bytearray(b"".join(bytes(k.key) for k in pads))
    try:
        otp_ct = otp_xor(plaintext, pad)
        nonce = os.urandom(12)
        gcm_ct = AESGCM(bytes(aes.key)).encrypt(nonce, plaintext, aes.key_id.bytes)
    finally:
        pad[:] = bytes(len(pad))
        for k in (*pads, aes):
            k.wipe()
    # -- only (key_IDs, ciphertext, nonce) cross from site A to site B -------------------------
    pads_b = site_b.dec_keys(sender, [k.key_id for k in pads])
    [aes_b] = site_b.dec_keys(sender, [aes.key_id])
    pad_b = bytearray(b"".join(bytes(k.key) for k in pads_b))
    try:
        otp_pt = otp_xor(otp_ct, pad_b)
        gcm_pt = AESGCM(bytes(aes_b.key)).decrypt(nonce, gcm_ct, aes.key_id.bytes)
    finally:
        pad_b[:] = bytes(len(pad_b))
        for k in (*pads_b, aes_b):
            k.wipe()
    return {"record_bytes": len(plaintext),
            "otp": {"key_IDs": [str(k.key_id) for k in pads], "pad_bits": 8 * len(pad),
                    "decrypted_equal": otp_pt == plaintext},
            "aes_256_gcm": {"key_ID": str(aes.key_id), "decrypted_equal": gcm_pt == plaintext}}
