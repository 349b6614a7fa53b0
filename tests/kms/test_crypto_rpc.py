"""Record ciphers, and the socket layer's answer to any frames at all."""

from __future__ import annotations

import json
import secrets

import pytest
from hypothesis import given, settings, strategies as st

from kms.crypto import AES_GCM, OTP, CipherError, open_sealed, otp_capacity, seal
from kms.errors import UnknownName
from kms.rpc import PROTOCOL, RpcServer


@pytest.mark.parametrize("algorithm,key_len", [(OTP, 1056), (AES_GCM, 32)])
def test_round_trip_and_any_flipped_bit_is_refused(algorithm, key_len):
    key = bytearray(secrets.token_bytes(key_len))
    record = secrets.token_bytes(1024)
    sealed = seal(algorithm, key, record, b"T1|position|k1")
    assert open_sealed(algorithm, key, sealed, b"T1|position|k1") == record
    assert record not in sealed
    for pos in (0, len(sealed) // 2, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[pos] ^= 0x01
        with pytest.raises(CipherError, match="authentication failed"):
            open_sealed(algorithm, key, bytes(bad), b"T1|position|k1")
    with pytest.raises(CipherError, match="authentication failed"):
        open_sealed(algorithm, key, sealed, b"T2|position|k1")   # moved to another terminal


def test_one_time_pad_refuses_a_record_longer_than_its_key():
    key = bytearray(secrets.token_bytes(64))
    assert otp_capacity(64) == 32
    seal(OTP, key, b"x" * 32)
    with pytest.raises(CipherError, match="needs a key of at least 65 bytes"):
        seal(OTP, key, b"x" * 33)
    with pytest.raises(CipherError, match="unknown algorithm 'des'"):
        seal("des", key, b"x")


def _server():
    def handler(principal, op, body):
        if op == "echo":
            return {"principal": principal, "n": len(body)}
        raise UnknownName(f"unknown operation {op!r}")
    return RpcServer("fuzz", "tcp://127.0.0.1:*", public_key=b"0" * 40, secret_key=b"0" * 40,
                     resolve=lambda k: "user:u" if k == "known" else None, handler=handler)


SERVER = _server()   # never started: answer() is the sans-socket core


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=6), st.sampled_from(["known", "stranger"]))
def test_any_frames_get_a_five_frame_reply_with_a_clear_status(frames, who):
    reply = SERVER.answer(who, frames)
    assert len(reply) == 5 and bytes(reply[0]) == PROTOCOL
    status = int(bytes(reply[3]))
    body = json.loads(bytes(reply[4]))
    if status != 200:
        assert status in (400, 401, 404) and body["message"]


def test_a_well_formed_request_is_answered_and_an_unknown_key_refused():
    ok = SERVER.answer("known", [PROTOCOL, b"echo", b"r1", b'{"a": 1}'])
    assert bytes(ok[3]) == b"200" and json.loads(bytes(ok[4])) == {"principal": "user:u", "n": 1}
    assert bytes(ok[2]) == b"r1"
    no = SERVER.answer("stranger", [PROTOCOL, b"echo", b"r1", b"{}"])
    assert bytes(no[3]) == b"401"
