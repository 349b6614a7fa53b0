"""A freight record sent from site A to site B under a quantum key, two ways.

At site A a dispatcher (SAE ``dispatcher``) asks its node for a key for the recipient
(SAE ``recipient``) and encrypts a freight record — waybill, driver identity, cargo, position —
once with a one-time pad and once with AES-256-GCM. Only the ciphertext and the key ID travel.
At site B the recipient asks its own node for the key with that ID and decrypts.

Run against two running nodes (``make demo`` does this at its end):

    python examples/freight_records.py --node-a tcp://127.0.0.1:7201 --node-b tcp://127.0.0.1:7202 \
        --server-key-a A.key --server-key-b B.key --client-a dispatcher.key_secret \
        --client-b recipient.key_secret

The keys themselves are never printed. The exchange itself is ``daemon.keyservice.freight``
(``make demo`` runs the same code between its two nodes).
"""

from __future__ import annotations

import argparse
import json
import sys

from daemon.curve_keys import KeyFileError, load_keypair, load_public_key
from daemon.keyservice.client import KeyClient, KeyServiceError, KeyServiceTimeout
from daemon.keyservice.freight import RECORD, otp_xor, send_and_receive

__all__ = ["RECORD", "otp_xor", "send_and_receive", "main"]


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
