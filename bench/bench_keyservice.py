"""Key service figures: requests/s, keys/s and latency over CurveZMQ on loopback.

Clients are separate processes (DEALER, one request outstanding each, as an application would
use it) against, in the same run:
- the baseline: a bare pyzmq CURVE ROUTER loop behind a ZAP allow-list answering a fixed reply —
  the ceiling of the transport on this machine;
- the node's key service (``KeyServiceRunner``, as the daemon runs it) at node A with its
  durable SQLite store, and node B in another process with its own store: every key handed out
  at A is reserved durably at B (RESERVE/RESERVED over a ZeroMQ PAIR link on loopback, without
  the peer channel's CURVE and tag), from the keys A reserves ahead per SAE pair.

Each case emits one JSON line; ``vs_bare`` is the service's request rate over the bare loop's
with the same number of clients at the start of the run, ``vs_bare_paired`` over the bare
loop's measured again just before the case (``bare_paired_requests_per_s``: on shared cores the
machine's speed drifts by up to 2x within a run, so this is the ratio to read); ``waited_for_peer`` counts requests that found too few keys
reserved ahead and waited for node B's fsync; ``cpu_ms_per_request`` and ``cpu_us_per_key`` are
each node's CPU over the case (all its threads) per request and per key. Environment: QKD_BENCH_KS_AHEAD (keys node A
reserves ahead per SAE pair, default 16384: about a second of keys at the rates measured here,
so that a slow fsync at B does not empty it), QKD_BENCH_KS_SECONDS (per case, default 3),
QKD_BENCH_KS_MAX_KEYS (keys one case may take, default 150000: the stores are filled per case,
and a case whose clients reach it stops early — its rates stand, over a shorter time).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import tempfile
import time
import uuid

import numpy as np
import zmq
import zmq.asyncio

from bench.common import cpu_seconds, emit, progress
from daemon.keyservice.wire import encode_request
from daemon.keystore.cutting import new_key_ids

CLIENTS = (1, 4, 16)
NUMBERS = (1, 32)
RESERVE_AHEAD = int(os.environ.get("QKD_BENCH_KS_AHEAD", "16384"))
SECONDS = float(os.environ.get("QKD_BENCH_KS_SECONDS", "3"))
MAX_KEYS = int(os.environ.get("QKD_BENCH_KS_MAX_KEYS", "150000"))
DEADLINE_S = 60.0
KEY_BITS = 256
LINK = "L"


def _client(endpoint, server_pub, pub, sec, op, body, seconds, queue, max_requests=None):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_pub, pub, sec
    sock.linger = 0
    sock.connect(endpoint)
    lat, n_keys, errors = [], 0, 0
    start = time.perf_counter()
    stop = start + seconds
    try:
        while time.perf_counter() < stop and (max_requests is None or len(lat) < max_requests):
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


def run_clients(endpoint, server_pub, client_keys, op, body, seconds=SECONDS,
                max_requests=None) -> dict:
    queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(
        target=_client, args=(endpoint, server_pub, pub, sec, op, body, seconds, queue,
                              max_requests))
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
    """The baseline: ROUTER + CURVE + ZAP allow-list, a fixed 200 reply, nothing else — a
    blocking loop in a thread of its own, pyzmq's fastest way to answer (an asyncio loop
    around the same socket answered up to a third fewer requests here)."""

    def __init__(self, public, secret, allowed):
        self.public, self.secret, self.allowed = public, secret, allowed

    def run(self, ready: list, stop) -> None:
        from zmq.auth.thread import ThreadAuthenticator
        ctx = zmq.Context()
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=self)
        sock = ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
        sock.bind("tcp://127.0.0.1:*")
        ready.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        reply_tail = [b"200", b'{"keys":[{"key_ID":"00000000-0000-0000-0000-000000000000",'
                              b'"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}']
        try:
            while not stop.is_set():
                if not sock.poll(100):
                    continue
                while True:      # everything queued, then back to the (costlier) poll
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    sock.send_multipart([frames[0], *frames[1:4], *reply_tail])
        finally:
            sock.close(linger=0)
            auth.stop()
            ctx.term()

    def callback(self, domain, key):
        return key in self.allowed


def _fill(store, block_id: int, n_keys: int, seed: int, coordinator: bool) -> None:
    """The same ``n_keys`` keys (IDs and bits from ``seed``) in both nodes' stores, as the
    engine's two-step commit would leave them (bench data: numpy's generator is fine here)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n_keys, KEY_BITS // 8), dtype=np.uint8).tobytes()
    step = KEY_BITS // 8
    # the engine's own ID layout, reproducible so that both stores get the same IDs
    ids = new_key_ids(n_keys, entropy=rng.integers(0, 256, 6 + 6 * n_keys,
                                                   dtype=np.uint8).tobytes())
    keys = [(ids[i], raw[i * step:(i + 1) * step]) for i in range(n_keys)]
    store.prepare(LINK, block_id, keys, coordinator=coordinator)
    store.commit(LINK, block_id)


class _PairLink:
    """The peer link of the benchmark: one ZeroMQ PAIR socket per node, frames [type, payload]."""

    def __init__(self, ctx, bind: str | None = None, connect: str | None = None):
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.linger = 0
        if bind:
            self.sock.bind(bind)
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            self.sock.connect(connect)
            self.endpoint = connect

    async def send(self, msg_type: int, payload: bytes) -> None:
        await self.sock.send_multipart([bytes([msg_type]), payload])

    async def pump(self, runner) -> None:
        while True:
            t, payload = await self.sock.recv_multipart()
            await runner.on_peer_message(t[0], payload)


def _settings(name: str, clients: dict, remote: set, reserve_ahead: int):
    from daemon.keyservice.runner import KeyServiceSettings
    pub, sec = zmq.curve_keypair()
    return KeyServiceSettings(endpoint="tcp://127.0.0.1:*", link_id=LINK, kme_id=f"KME-{name}",
                              peer_kme_id="KME-B" if name == "A" else "KME-A",
                              public_key=pub, secret_key=sec, clients=clients,
                              remote_saes=frozenset(remote), max_key_per_request=128,
                              lease_batch=8192, reserve_ahead=reserve_ahead,
                              settle_interval_s=1.0)


def _node_b(ctrl, peer_endpoint: str, store_path: str) -> None:
    """Node B's process: its store and runner; ``ctrl`` takes fill/stop commands."""
    from daemon.keyservice.runner import KeyServiceRunner
    from daemon.keystore.store import KeyStore

    async def main():
        store = KeyStore(store_path)
        ctx = zmq.asyncio.Context()
        link = _PairLink(ctx, connect=peer_endpoint)
        runner = KeyServiceRunner(_settings("B", {zmq.curve_keypair()[0]: "Y"}, {"X"}, 0),
                                  store, link.send, key_size_bits=KEY_BITS)
        await runner.start()
        pump = asyncio.create_task(link.pump(runner))
        loop = asyncio.get_running_loop()
        ctrl.send("ready")
        while True:
            cmd = await loop.run_in_executor(None, ctrl.recv)
            if cmd[0] == "fill":
                await loop.run_in_executor(None, _fill, store, *cmd[1:], False)
                ctrl.send("filled")
            elif cmd[0] == "status":
                ctrl.send(runner.status()["counters"])
            else:
                break
        pump.cancel()
        await runner.close()
        link.sock.close(0)
        ctx.term()
        store.close()
        ctrl.send("stopped")

    asyncio.run(main())


class _NodeA:
    """Node A's runner on an event loop in a thread of this process (like the bare loop)."""

    def __init__(self, store_path: str, clients: dict, reserve_ahead: int):
        import threading
        from daemon.keystore.store import KeyStore
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = KeyStore(store_path)
        self.ctx = zmq.asyncio.Context()
        self.link = self.call(self._link())
        self.clients, self.reserve_ahead = clients, reserve_ahead

    async def _link(self):
        return _PairLink(self.ctx, bind="tcp://127.0.0.1:*")

    def call(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self):
        from daemon.keyservice.runner import KeyServiceRunner

        async def go():
            self.settings = _settings("A", self.clients, {"Y"}, self.reserve_ahead)
            self.runner = KeyServiceRunner(self.settings, self.store, self.link.send,
                                           key_size_bits=KEY_BITS)
            await self.runner.start()
            self.pump = asyncio.create_task(self.link.pump(self.runner))
        self.call(go())
        return self.runner.endpoint, self.settings.public_key

    def stop(self):
        async def go():
            self.pump.cancel()
            await self.runner.close()
            self.link.sock.close(0)
        self.call(go())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.ctx.term()
        self.store.close()


def _serve_in_thread(server):
    import threading
    ready: list = []
    stop = threading.Event()
    t = threading.Thread(target=server.run, args=(ready, stop), daemon=True)
    t.start()
    deadline = time.time() + 10
    while not ready:
        if time.time() > deadline:
            raise TimeoutError("benchmark server did not start")
        time.sleep(0.01)
    return ready[0], lambda: (stop.set(), t.join(10))


def _bench_service(keys, bare_rates: dict, tmp: str, bare: tuple[str, bytes]) -> None:
    clients = {pub: "X" for pub, _ in keys}
    parent, child = mp.get_context("fork").Pipe()
    a = _NodeA(os.path.join(tmp, "a.db"), clients, reserve_ahead=RESERVE_AHEAD)
    b = mp.get_context("fork").Process(target=_node_b,
                                       args=(child, a.link.endpoint, os.path.join(tmp, "b.db")))
    b.start()
    if not parent.poll(60) or parent.recv() != "ready":
        raise RuntimeError("node B did not start")
    endpoint, server_pub = a.start()
    block = 0
    try:
        for number in NUMBERS:
            for n in CLIENTS:
                block += 1
                # keys this case may take at A: never more than the bare loop could ask for
                budget = min(MAX_KEYS, int(bare_rates[n] * SECONDS * 1.2) * number)
                n_fill = 2 * budget + 6 * 8192     # A issues half; warm-up, lease, ahead slack
                progress(f"key service, {n} clients, number={number}: filling both stores "
                         f"with {n_fill} keys")
                parent.send(("fill", block, n_fill, block))
                _fill(a.store, block, n_fill, block, True)
                if not parent.poll(300) or parent.recv() != "filled":
                    raise RuntimeError("node B did not fill its store")
                # warm-up, not timed: the first lease and the first keys reserved ahead
                # (a running node has both; a fresh one pays them once)
                run_clients(endpoint, server_pub, keys[:1], "enc_keys",
                            {"slave_SAE_ID": "Y", "number": number, "size": KEY_BITS},
                            seconds=0.3)
                time.sleep(1.0)
                # the bare loop again, seconds before the case: on shared cores the machine's
                # speed drifts between the first baselines and this case, by up to 2x
                paired = run_clients(*bare, keys[:n], "enc_keys",
                                     {"slave_SAE_ID": "Y", "number": 1})["requests_per_s"]
                progress(f"key service, {n} clients, number={number}")
                waited = a.runner.pool.counters["reserved_on_request"]
                cpu0 = cpu_seconds(), cpu_seconds(b.pid)
                fig = run_clients(endpoint, server_pub, keys[:n], "enc_keys",
                                  {"slave_SAE_ID": "Y", "number": number, "size": KEY_BITS},
                                  max_requests=budget // number // n)
                # requests that found too few keys reserved ahead and waited for the peer
                waited = a.runner.pool.counters["reserved_on_request"] - waited
                # CPU per request of each node (A: this process, where only A's threads work
                # during a case), a figure the machine's drifting speed moves less than rates
                cpu = cpu_seconds() - cpu0[0], cpu_seconds(b.pid) - cpu0[1]
                n_req = max(1, fig["requests"])
                emit("keyservice", case="node_service_durable_reserved", clients=n,
                     number=number, size_bits=KEY_BITS,
                     vs_bare=round(fig["requests_per_s"] / bare_rates[n], 3),
                     bare_paired_requests_per_s=paired,
                     vs_bare_paired=round(fig["requests_per_s"] / paired, 3),
                     waited_for_peer=waited,
                     cpu_ms_per_request={"A": round(1e3 * cpu[0] / n_req, 3),
                                         "B": round(1e3 * cpu[1] / n_req, 3)},
                     cpu_us_per_key={"A": round(1e6 * cpu[0] / (n_req * number), 2),
                                     "B": round(1e6 * cpu[1] / (n_req * number), 2)},
                     **fig)
                # what is left of this case's keys goes back before the next case is filled
                a.call(a.runner.pool.close(void_wait_s=5.0))
    finally:
        a.stop()
        parent.send(("stop",))
        parent.poll(30)
        b.join(30)


def main() -> None:
    server_pub, server_sec = zmq.curve_keypair()
    keys = [zmq.curve_keypair() for _ in range(max(CLIENTS))]
    bare = _BareServer(server_pub, server_sec, {p for p, _ in keys})
    endpoint, stop = _serve_in_thread(bare)
    bare_rates = {}
    try:
        for n in CLIENTS:
            progress(f"bare CURVE ROUTER loop, {n} clients")
            fig = run_clients(endpoint, server_pub, keys[:n], "enc_keys",
                              {"slave_SAE_ID": "Y", "number": 1})
            bare_rates[n] = fig["requests_per_s"]
            emit("keyservice", case="bare_curve_router_baseline", clients=n, number=1, **fig)
        with tempfile.TemporaryDirectory() as tmp:
            _bench_service(keys, bare_rates, tmp, (endpoint, server_pub))
    finally:
        stop()


if __name__ == "__main__":
    main()
