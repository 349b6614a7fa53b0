"""A peer node stand-in in its own process: echoes every block message back (tests, bench).

    python -m tests.daemon.peer.echo_peer POOL_DIR ROLE MODE ENDPOINT PUBLIC SECRET PEER_PUBLIC

Prints ``ready ENDPOINT`` once the socket is up (the bound endpoint in bind mode).
"""

from __future__ import annotations

import asyncio
import sys

from daemon.peer.auth_keys import AuthKeyPool
from daemon.peer.channel import PeerChannel
from tests.daemon.peer.helpers import FAST


async def serve(argv: list[str]) -> None:
    pool_dir, role, mode, endpoint, public, secret, peer_public = argv
    pool = AuthKeyPool(pool_dir, local_role=role)
    channel = PeerChannel(link_id=1, pool=pool, mode=mode, endpoint=endpoint,
                          public_key=public.encode(), secret_key=secret.encode(),
                          peer_public_key=peer_public.encode(), **FAST)
    await channel.start()
    print("ready", channel.bound_endpoint or endpoint, flush=True)
    async for env in channel.messages():
        await channel.send(env.link_id, env.block_id, env.step, env.msg_type, env.payload)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
