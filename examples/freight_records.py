"""A freight record sent from site A to site B under a quantum key, two ways.

At site A a dispatcher (SAE ``dispatcher``) asks its node for a key for the recipient
(SAE ``recipient``) and encrypts a freight record — waybill, driver identity, cargo, position —
once with a one-time pad and once with AES-256-GCM. Only the ciphertext and the key ID travel.
At site B the recipient asks its own node for the key with that ID and decrypts.

Run against two running nodes (``make demo`` does this at its end):

    python examples/freight_records.py --node-a tcp://127.0.0.1:7201 --node-b tcp://127.0.0.1:7202 \
        --server-key-a A.key --server-key-b B.key --client-a dispatcher.key_secret \
        --client-b recipient.key_secret

The keys themselves are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.curve_keys import KeyFileError, load_keypair, load_public_key
from daemon.keyservice.client import KeyClient, KeyServiceError, KeyServiceTimeout

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


def send_and_receive(site_a: KeyClient, site_b: KeyClient, *, sender: str = "dispatcher",
                     recipient: str = "recipient", record: dict = RECORD) -> dict:
    """Encrypt at A, decrypt at B; return what each step did (no key material).

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--node-a", required=True, help="key service endpoint of site A's node")
    p.add_argument("--node-b", required=True, help="key service endpoint of site B's node")
    p.add_argument("--server-key-a", required=True, help="public key file of node A's service")
    p.add_argument("--server-key-b", required=True, help="public key file of node B's service")
    p.add_argument("--client-a", required=True, help="dispatcher's secret key file")
    p.add_argument("--client-b", required=True, help="recipient's secret key file")
    p.add_argument("--timeout-s", type=float, default=2.0, help="per attempt (default 2)")
    args = p.parse_args(argv)
    try:
        ka, kb = load_keypair(args.client_a), load_keypair(args.client_b)
        with KeyClient(args.node_a, server_public_key=load_public_key(args.server_key_a),
                       public_key=ka.public, secret_key=ka.secret,
                       timeout_s=args.timeout_s) as a, \
             KeyClient(args.node_b, server_public_key=load_public_key(args.server_key_b),
                       public_key=kb.public, secret_key=kb.secret,
                       timeout_s=args.timeout_s) as b:
            out = send_and_receive(a, b)
    except (KeyFileError, KeyServiceError, KeyServiceTimeout, ValueError) as exc:
        print(f"freight_records: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0 if out["otp"]["decrypted_equal"] and out["aes_256_gcm"]["decrypted_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
