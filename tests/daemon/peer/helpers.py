"""Build pairs of peer channels on loopback for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import zmq

from daemon.peer.auth_keys import AuthKeyPool, write_bootstrap
from daemon.peer.channel import PeerChannel

# Quick failure detection so tests need not wait for production timeouts.
FAST = dict(heartbeat_s=0.2, heartbeat_timeout_s=0.6, reconnect_s=0.02, reconnect_max_s=0.1,
            handshake_timeout_s=1.0)
REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pools(directory: Path, n_bytes: int = 1 << 20, **kw) -> tuple[AuthKeyPool, AuthKeyPool]:
    boot = directory / "bootstrap.bin"
    write_bootstrap(boot, n_bytes)
    return (AuthKeyPool(directory / "alice", local_role="alice", bootstrap=boot, **kw),
            AuthKeyPool(directory / "bob", local_role="bob", bootstrap=boot, **kw))


class Keys:
    def __init__(self):
        self.alice = zmq.curve_keypair()
        self.bob = zmq.curve_keypair()


def channel(pool: AuthKeyPool, mine, peer_public: bytes, mode: str, endpoint: str,
            **kw) -> PeerChannel:
    opts = dict(FAST)
    opts.update(kw)
    return PeerChannel(link_id=1, pool=pool, mode=mode, endpoint=endpoint, public_key=mine[0],
                       secret_key=mine[1], peer_public_key=peer_public, **opts)


@contextlib.asynccontextmanager
async def channel_pair(directory: Path, *, proxy_factory=None, alice_kw=None, bob_kw=None,
                       pool_bytes: int = 1 << 20):
    """Alice binds, Bob connects (through a proxy if ``proxy_factory(port)`` is given)."""
    pa, pb = make_pools(directory, pool_bytes)
    keys = Keys()
    a = channel(pa, keys.alice, keys.bob[0], "bind", "tcp://127.0.0.1:*", **(alice_kw or {}))
    await a.start()
    port = int(a.bound_endpoint.rsplit(":", 1)[1])
    proxy = proxy_factory(port) if proxy_factory else None
    endpoint = proxy.endpoint if proxy else a.bound_endpoint
    b = channel(pb, keys.bob, keys.alice[0], "connect", endpoint, **(bob_kw or {}))
    await b.start()
    try:
        await asyncio.gather(a.wait_connected(10), b.wait_connected(10))
        yield a, b, proxy
    finally:
        await b.close()
        await a.close()
        if proxy:
            proxy.close()
        pa.close()
        pb.close()


async def next_event_of(ch: PeerChannel, kind: str, timeout: float = 5.0):
    """Skip events until one of ``kind`` (asyncio.TimeoutError if none comes)."""
    async def find():
        while True:
            e = await ch.next_event()
            if e.kind == kind:
                return e
    return await asyncio.wait_for(find(), timeout)


def drain_events(ch: PeerChannel) -> list:
    out = []
    while not ch._events.empty():
        out.append(ch._events.get_nowait())
    return out


def start_echo_peer(pool_dir: Path, role: str, mode: str, endpoint: str, mine,
                    peer_public: bytes) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.daemon.peer.echo_peer", str(pool_dir),
                             role, mode, endpoint, mine[0].decode(), mine[1].decode(),
                             peer_public.decode()], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    line = proc.stdout.readline().split()
    assert line and line[0] == "ready", f"echo peer did not start: {line}"
    return proc, line[1]
