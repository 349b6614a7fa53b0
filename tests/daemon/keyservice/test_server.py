"""The key service over real CurveZMQ sockets on loopback."""

from __future__ import annotations

import asyncio
import logging

import pytest
import zmq
import zmq.asyncio

from daemon.keyservice import service as svc
from daemon.keyservice.client import AsyncKeyClient, KeyServiceError, KeyServiceTimeout
from daemon.keyservice.server import KeyServer, ServiceStartError, key_fingerprint
from tests.daemon.keyservice.pools import MemoryPool, SharedLink
from tests.daemon.keyservice.test_service import LIMITS_A, LIMITS_B


def keypair():
    public, secret = zmq.curve_keypair()
    return public, secret


async def start_pair(clients_a, clients_b, server_keys_a, server_keys_b):
    link = SharedLink(1 << 14)
    ctx = zmq.asyncio.Context()   # the clients' context; each server owns its own
    a = KeyServer(svc.KeyService(LIMITS_A, MemoryPool(link)), "tcp://127.0.0.1:*",
                  public_key=server_keys_a[0], secret_key=server_keys_a[1], clients=clients_a)
    b = KeyServer(svc.KeyService(LIMITS_B, MemoryPool(link)), "tcp://127.0.0.1:*",
                  public_key=server_keys_b[0], secret_key=server_keys_b[1], clients=clients_b)
    await a.start()
    await b.start()
    return ctx, a, b


def test_service_refuses_to_start_without_an_allow_list():
    pub, sec = keypair()
    with pytest.raises(ServiceStartError, match="allow-list"):
        KeyServer(svc.KeyService(LIMITS_A, MemoryPool(SharedLink(64))), "tcp://127.0.0.1:*",
                  public_key=pub, secret_key=sec, clients={})


def test_keys_fetched_at_both_nodes_match_and_strangers_are_refused(caplog):
    sa, sb = keypair(), keypair()
    x, y, stranger = keypair(), keypair(), keypair()

    async def scenario():
        ctx, a, b = await start_pair({x[0]: "X"}, {y[0]: "Y"}, sa, sb)
        try:
            cx = AsyncKeyClient(a.endpoint, server_public_key=sa[0], public_key=x[0],
                                secret_key=x[1], context=ctx, timeout_s=1.0)
            cy = AsyncKeyClient(b.endpoint, server_public_key=sb[0], public_key=y[0],
                                secret_key=y[1], context=ctx, timeout_s=1.0)
            bad = AsyncKeyClient(a.endpoint, server_public_key=sa[0], public_key=stranger[0],
                                 secret_key=stranger[1], context=ctx, timeout_s=0.3, retries=1)
            status = await cx.status("Y")
            keys = await cx.enc_keys("Y", number=2, size=256)
            fetched = await cy.dec_keys("X", [k.key_id for k in keys])
            with pytest.raises(KeyServiceTimeout):
                await bad.status("Y")
            with pytest.raises(KeyServiceError) as err:
                await cy.dec_keys("X", [k.key_id for k in keys])
            for c in (cx, cy, bad):
                c.close()
            return status, keys, fetched, err.value, a
        finally:
            await a.stop()
            await b.stop()
            ctx.term()

    with caplog.at_level(logging.WARNING, logger="qkd.keyservice"):
        status, keys, fetched, err, a = asyncio.run(scenario())
    assert status["source_KME_ID"] == "KME-A" and status["master_SAE_ID"] == "X"
    assert [k.key_id for k in keys] == [k.key_id for k in fetched]
    assert [bytes(k.key) for k in keys] == [bytes(k.key) for k in fetched]
    assert err.status == 400 and err.message == svc.MSG_NOT_FOUND
    assert a._auth.rejected >= 1
    assert key_fingerprint(stranger[0]) in caplog.text


def test_a_client_removed_from_the_allow_list_is_refused_at_once():
    sa, sb = keypair(), keypair()
    x, x2, y = keypair(), keypair(), keypair()

    async def scenario():
        ctx, a, b = await start_pair({x[0]: "X", x2[0]: "X2"}, {y[0]: "Y"}, sa, sb)
        try:
            cx = AsyncKeyClient(a.endpoint, server_public_key=sa[0], public_key=x[0],
                                secret_key=x[1], context=ctx, timeout_s=1.0)
            assert (await cx.status("Y"))["master_SAE_ID"] == "X"
            a.set_clients({x2[0]: "X2"})
            with pytest.raises(KeyServiceError) as err:
                await cx.enc_keys("Y")
            cx.close()
            return err.value
        finally:
            await a.stop()
            await b.stop()
            ctx.term()

    err = asyncio.run(scenario())
    assert err.status == 401


class _GatedPool(MemoryPool):
    """Keys for ``X`` wait until ``gate`` opens (a reservation waiting on the peer);
    everyone else's come at once."""

    def __init__(self, link):
        super().__init__(link)
        self.gate = asyncio.Event()

    async def issue(self, master, slaves, number, size_bits):
        if master == "X":
            await self.gate.wait()
        return await super().issue(master, slaves, number, size_bits)


def test_a_request_that_waits_holds_up_no_other_and_a_burst_is_answered_whole():
    """Requests are answered from the socket's reader, at once when the service needs no
    wait: one that waits (here on a gate) goes on as a task while others are answered, and
    a burst larger than one reader turn (``DRAIN_BATCH``) is answered in full."""
    from daemon.keyservice.server import DRAIN_BATCH
    sa = keypair()
    x, z = keypair(), keypair()
    limits = svc.KmeLimits(**{**LIMITS_A.__dict__, "local_saes": frozenset({"X", "Z"})})

    async def scenario():
        pool = _GatedPool(SharedLink(1 << 16))
        a = KeyServer(svc.KeyService(limits, pool), "tcp://127.0.0.1:*", public_key=sa[0],
                      secret_key=sa[1], clients={x[0]: "X", z[0]: "Z"})
        await a.start()
        ctx = zmq.asyncio.Context()
        try:
            cx = AsyncKeyClient(a.endpoint, server_public_key=sa[0], public_key=x[0],
                                secret_key=x[1], context=ctx, timeout_s=5.0, retries=1)
            waiting = asyncio.create_task(cx.enc_keys("Y", number=1))
            await asyncio.sleep(0.2)
            zs = [AsyncKeyClient(a.endpoint, server_public_key=sa[0], public_key=z[0],
                                 secret_key=z[1], context=ctx, timeout_s=5.0, retries=1)
                  for _ in range(3 * DRAIN_BATCH)]
            burst = await asyncio.gather(*(c.enc_keys("Y", number=1) for c in zs))
            held = waiting.done()
            pool.gate.set()
            got = await waiting
            for c in (cx, *zs):
                c.close()
            return burst, held, got
        finally:
            await a.stop()
            ctx.term()

    burst, held, got = asyncio.run(scenario())
    ids = [k.key_id for keys in burst for k in keys]
    assert len(ids) == 3 * DRAIN_BATCH and len(set(ids)) == len(ids)
    assert not held and len(got) == 1 and got[0].key_id not in ids
