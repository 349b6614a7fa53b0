"""Fuzzing the request parser: 1e5 random and mutated requests in CI (more via QKD_FUZZ_N)."""

from __future__ import annotations

import asyncio
import json
import os
import random

from daemon.keyservice.wire import (OPERATIONS, PROTOCOL, Request, RequestError, decode_reply,
                                    decode_request, encode_request)
from tests.daemon.keyservice.test_service import pair

N_INPUTS = int(os.environ.get("QKD_FUZZ_N", "100000"))

SEEDS = [
    ("status", {"slave_SAE_ID": "Y"}),
    ("enc_keys", {"slave_SAE_ID": "Y", "number": 2, "size": 256,
                  "additional_slave_SAE_IDs": [], "extension_optional": [{"a": 1}]}),
    ("dec_keys", {"master_SAE_ID": "X",
                  "key_IDs": [{"key_ID": "0f5c6a6e-8a5e-4d2e-9a39-3e8a7c1b2d4f"}]}),
    ("open_connect", {"source": "X", "destination": "Y", "qos": {"key_chunk_size": 32}}),
    ("get_key", {"key_stream_id": "s", "index": 3}),
    ("close", {"key_stream_id": "s"}),
]
ODD_VALUES = [None, True, -1, 0, 2**63, -2**70, 1e308, float("nan"), "", "x" * 100, [], {},
              [1, "a"], {"k": [None]}, "\u0000", "\ud7ff", 3.5]


def _mutate(rng: random.Random) -> list[bytes]:
    op, body = rng.choice(SEEDS)
    body = json.loads(json.dumps(body))
    choice = rng.randrange(6)
    if choice == 0 and body:
        body[rng.choice(list(body))] = rng.choice(ODD_VALUES)
    elif choice == 1:
        body[rng.choice(["extra", "number", "size", "qos", "key_IDs"])] = rng.choice(ODD_VALUES)
    frames = encode_request(op, rng.randbytes(rng.randrange(0, 70)), body)
    if choice == 2:
        raw = bytearray(frames[3])
        for _ in range(rng.randrange(1, 4)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        frames[3] = bytes(raw)
    elif choice == 3:
        frames[3] = frames[3][:rng.randrange(len(frames[3]) + 1)]
    elif choice == 4:
        frames = frames[:rng.randrange(6)] + [rng.randbytes(rng.randrange(8))] * rng.randrange(2)
    elif choice == 5:
        frames[rng.randrange(2)] = rng.choice([PROTOCOL, rng.randbytes(7), *OPERATIONS])
    return frames


def test_the_parser_returns_a_request_or_a_400_for_every_input():
    rng = random.Random(20261202)
    accepted = refused = 0
    for _ in range(N_INPUTS):
        frames = _mutate(rng)
        try:
            out = decode_request(frames)
        except RequestError as err:
            assert err.status == 400 and err.message
            refused += 1
        else:
            assert isinstance(out, Request)
            accepted += 1
    # both outcomes must be exercised, or the fuzzer tests nothing
    assert accepted > N_INPUTS // 20 and refused > N_INPUTS // 20


def test_the_service_answers_every_fuzzed_request_and_keeps_serving():
    rng = random.Random(7)
    a, _ = pair(n_bytes=32 * 10_000)

    async def run():
        statuses = set()
        for _ in range(3000):
            reply = decode_reply(await a.handle("X", _mutate(rng)))
            statuses.add(reply.status)
        good = decode_reply(await a.handle("X", encode_request("status", b"ok",
                                                                {"slave_SAE_ID": "Y"})))
        return statuses, good

    statuses, good = asyncio.run(run())
    assert statuses <= {200, 400, 401}   # 503 would mean an internal error
    assert 400 in statuses and 200 in statuses
    assert good.status == 200
