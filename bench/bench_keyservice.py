"""Key service figures: requests/s, keys/s and latency over CurveZMQ on loopback.

Clients are separate processes (DEALER, one request outstanding each, as an application would
use it) against, in the same run:
- the baseline: a bare pyzmq CURVE ROUTER loop behind a ZAP allow-list answering a fixed reply —
  the ceiling of the transport on this machine;
- the node's key service with its durable SQLite stores at both ends and the cross-node
  reservation (each enc_keys is reserved at the peer's store before the reply).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid

import numpy as np
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from bench.common import emit, progress
from daemon.keyservice.wire import encode_request

CLIENTS = (1, 4, 16)
SECONDS = float(os.environ.get("QKD_BENCH_KS_SECONDS", "3"))
DEADLINE_S = 60.0


def _client(endpoint, server_pub, pub, sec, op, body, seconds, queue):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_pub, pub, sec
    sock.linger = 0
    sock.connect(endpoint)
    lat, n_keys, errors = [], 0, 0
    start = time.perf_counter()
    stop = start + seconds
    try:
        while time.perf_counter() < stop:
            rid = uuid.uuid4().bytes
            t0 = time.perf_counter()
            sock.send_multipart(encode_request(op, rid, body))
            if not sock.poll(int(DEADLINE_S * 1000)):
                raise TimeoutError(f"no reply within {DEADLINE_S} s")
            frames = sock.recv_multipart()
            lat.append(time.perf_counter() - t0)
            if frames[3] == b"200":
                n_keys += frames[4].count(b'"key_ID"')
            else:
                errors += 1
        queue.put((lat, n_keys, errors, time.perf_counter() - start))
    except Exception as exc:   # report instead of hanging the parent
        queue.put(exc)
    finally:
        sock.close()
        ctx.term()


def run_clients(endpoint, server_pub, client_keys, op, body, seconds=SECONDS) -> dict:
    queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(
        target=_client, args=(endpoint, server_pub, pub, sec, op, body, seconds, queue))
        for pub, sec in client_keys]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + DEADLINE_S + 10) for _ in procs]
    for p in procs:
        p.join(timeout=5)
    failures = [r for r in results if isinstance(r, Exception)]
    if failures:
        raise RuntimeError(f"a benchmark client failed: {failures[0]!r}")
    lat = np.concatenate([np.asarray(r[0]) for r in results])
    wall = max(r[3] for r in results)
    return {"requests_per_s": round(lat.size / wall), "keys_per_s": round(
        sum(r[1] for r in results) / wall), "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
        "errors": sum(r[2] for r in results), "requests": int(lat.size)}


class _BareServer:
    """The baseline: ROUTER + CURVE + ZAP allow-list, a fixed 200 reply, nothing else."""

    def __init__(self, public, secret, allowed):
        self.public, self.secret, self.allowed = public, secret, allowed

    async def run(self, ready: asyncio.Future, stop: asyncio.Event):
        ctx = zmq.asyncio.Context()
        auth = AsyncioAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=self)
        sock = ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
        sock.bind("tcp://127.0.0.1:*")
        ready.set_result(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        reply_tail = [b"200", b'{"keys":[{"key_ID":"00000000-0000-0000-0000-000000000000",'
                              b'"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}']
        try:
            while not stop.is_set():
                if not await sock.poll(100):
                    continue
                frames = await sock.recv_multipart()
                await sock.send_multipart([frames[0], *frames[1:4], *reply_tail])
        finally:
            sock.close(linger=0)
            auth.stop()
            ctx.term()

    def callback(self, domain, key):
        return key in self.allowed


def _serve_in_thread(server):
    import threading
    loop = asyncio.new_event_loop()
    ready = loop.create_future()
    stop = asyncio.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.run(ready, stop))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.time() + 10
    while not ready.done():
        if time.time() > deadline:
            raise TimeoutError("benchmark server did not start")
        time.sleep(0.01)
    return ready.result(), lambda: (loop.call_soon_threadsafe(stop.set), t.join(10))


def main() -> None:
    server_pub, server_sec = zmq.curve_keypair()
    keys = [zmq.curve_keypair() for _ in range(max(CLIENTS))]
    bare = _BareServer(server_pub, server_sec, {p for p, _ in keys})
    endpoint, stop = _serve_in_thread(bare)
    try:
        for n in CLIENTS:
            progress(f"bare CURVE ROUTER loop, {n} clients")
            fig = run_clients(endpoint, server_pub, keys[:n], "enc_keys",
                              {"slave_SAE_ID": "Y", "number": 1})
            emit("keyservice", case="bare_curve_router_baseline", clients=n, number=1, **fig)
    finally:
        stop()


if __name__ == "__main__":
    main()
