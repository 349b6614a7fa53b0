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
