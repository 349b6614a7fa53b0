"""One node's key service as a process of its own, for the kill -9 test (tests only).

    python -m tests.daemon.keyservice.node_proc CONFIG.json

The JSON names the store, the key-service endpoint, the CURVE keys, the clients and a ZeroMQ
PAIR endpoint standing in for the peer channel (``bind`` at one node, ``connect`` at the
other; libzmq reconnects after the peer restarts). It prints "ready" once it serves.
"""

from __future__ import annotations

import asyncio
import json
import sys

import zmq
import zmq.asyncio

from daemon.keyservice.runner import KeyServiceRunner, KeyServiceSettings
from daemon.keystore.store import KeyStore


async def main(cfg: dict) -> None:
    store = KeyStore(cfg["store"])
    ctx = zmq.asyncio.Context()
    pair = ctx.socket(zmq.PAIR)
    pair.linger = 0
    if "bind" in cfg["peer"]:
        pair.bind(cfg["peer"]["bind"])
    else:
        pair.connect(cfg["peer"]["connect"])

    async def send(msg_type: int, payload: bytes) -> None:
        await pair.send_multipart([bytes([msg_type]), payload])

    settings = KeyServiceSettings(
        endpoint=cfg["endpoint"], link_id="L", kme_id=cfg["kme_id"],
        peer_kme_id=cfg["peer_kme_id"], public_key=cfg["public"].encode(),
        secret_key=cfg["secret"].encode(),
        clients={k.encode(): v for k, v in cfg["clients"].items()},
        remote_saes=frozenset(cfg["remote"]), lease_batch=16, reserve_ahead=cfg["ahead"],
        settle_interval_s=0.2, reserve_timeout_s=0.5, housekeeping_interval_s=0.3)
    runner = KeyServiceRunner(settings, store, send, key_size_bits=cfg["key_bits"])
    await runner.start()
    print("ready", flush=True)
    while True:
        msg_type, payload = await pair.recv_multipart()
        await runner.on_peer_message(msg_type[0], payload)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
