"""Stress of the board decoder: >= 10^6 random and mutated inputs in random chunkings, and the
stacked-header burst that used to take the square of its length (issue 7, defects 1 and 2).

Run alone for a report: ``python -m tests.firmware_protocol.test_decoder_stress [n_inputs]``
prints one JSON object (exceptions, slowest input, worst hashing per input byte).
"""

from __future__ import annotations

import json
import random
import struct
import sys
import time
import zlib

import numpy as np
import pytest

import firmware_protocol as fp
from firmware_protocol.crc_index import STRIDE
from firmware_protocol.framing import HEADER

GOOD = fp.Encoder(77).encode(fp.Heartbeat(0xBEEF))


def _sample_frames(rng: random.Random) -> list[bytes]:
    """One or more valid frames of every message type, small enough to mutate quickly."""
    msgs = [
        fp.IdentifyRequest(), fp.IdentifyReply(fp.Role.BOB, fp.Capability(0x31), "QKD-B", "1.2", "S1"),
        fp.Heartbeat(5), fp.HeartbeatReply(5, 1000, True), fp.SetParameter(fp.ParamId.MU, 0.5),
        fp.GetParameter(fp.ParamId.CLOCK_HZ), fp.ParameterValue(fp.ParamId.SYNC_PERIOD, 1000),
        fp.StartAcquisition(), fp.StopAcquisition(), fp.Ack(3, 0x20),
        fp.Nack(4, 0x10, fp.ErrorCode.VALUE_OUT_OF_RANGE, "mu above 2"),
        fp.PatternRequest(1, np.arange(5, dtype=np.uint64)),
        fp.PatternReply(1, np.array([0, 1, 2, 3, 4], np.uint8)),
        fp.ModulatorCalibration(0.0, 1.5, 3.0, 4.5),
        fp.PatternUpload(100, np.array([1, 2, 3], np.uint8)),
        fp.EventBatch(0, 1000, 9000, np.array([1000, 2000, 8999], np.int64),
                      np.array([0, 1, 3], np.uint8)),
        fp.TelemetryRequest(),
        fp.Telemetry(True, (fp.DetectorReading(10, 1.0, 2.0, -40.0),) * 2),
    ]
    assert {type(m) for m in msgs} == set(fp.MESSAGE_TYPES.values())
    enc = fp.Encoder(rng.getrandbits(32))
    return [enc.encode(m) for m in msgs]


def _reframe(msg_type: int, payload: bytes, claimed: int | None = None) -> bytes:
    """A frame around ``payload`` with both checks valid (``claimed`` overrides the length)."""
    length = len(payload) if claimed is None else claimed
    head = HEADER.pack(fp.SYNC_WORD, fp.PROTOCOL_VERSION, msg_type, 0, 1, length)
    return head + struct.pack("<I", zlib.crc32(head)) + payload + struct.pack("<I", zlib.crc32(payload))


def make_input(rng: random.Random, frames: list[bytes]) -> bytes:
    frame = bytearray(rng.choice(frames))
    kind = rng.randrange(9)
    if kind == 0:                                   # line noise
        return rng.randbytes(rng.randrange(121))
    if kind == 1:                                   # intact
        return bytes(frame)
    if kind == 2:                                   # bit flips anywhere
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(frame) * 8)
            frame[i // 8] ^= 1 << (i % 8)
        return bytes(frame)
    if kind == 3:                                   # cut short
        return bytes(frame[:rng.randrange(len(frame))])
    msg_type = frame[5]
    payload = bytes(frame[fp.HEADER_SIZE:-4])
    if kind == 4:                                   # random payload, valid CRCs (defect 1)
        return _reframe(msg_type, rng.randbytes(rng.randrange(64)))
    if kind == 5:                                   # real payload cut/extended, valid CRCs
        cut = rng.randrange(len(payload) + 1)
        return _reframe(msg_type, payload[:cut] + rng.randbytes(rng.randrange(8)))
    if kind == 6:                                   # frames with garbage between them
        return bytes(frame) + rng.randbytes(rng.randrange(30)) + rng.choice(frames)
    if kind == 7:                                   # stacked headers claiming past the end
        n = rng.randrange(1, 8)
        return b"".join(_reframe(msg_type, b"", claimed=20 * (n - k) + rng.randrange(40))[:20]
                        for k in range(n)) + rng.randbytes(rng.randrange(200))
    return fp.SYNC_WORD + rng.randbytes(rng.randrange(60))   # a sync word and noise


def _chunks(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def run_stress(n_inputs: int, seed: int = 2026) -> dict:
    rng = random.Random(seed)
    frames = _sample_frames(rng)
    exceptions: list[dict] = []
    slowest = (0.0, b"")
    worst_hash_ratio = (0.0, b"")
    good_after = 0
    clock = time.perf_counter
    for _ in range(n_inputs):
        data = make_input(rng, frames)
        dec = fp.Decoder()
        t0 = clock()
        try:
            chunks = _chunks(rng, data)
            chunks[-1] += GOOD          # the good frame rides on the last piece (one feed less)
            for chunk in chunks[:-1]:
                dec.feed(chunk)
            out = dec.feed(chunks[-1])
            if out and out[-1] == fp.Heartbeat(0xBEEF):
                good_after += 1
            else:       # a header in the input claims more bytes than came: legitimately waits
                dec.reset()
                if dec.feed(GOOD) != [fp.Heartbeat(0xBEEF)]:
                    raise AssertionError("decoder poisoned: a good frame after reset() is lost")
        except Exception as exc:  # noqa: BLE001 - the point is to catch anything
            exceptions.append({"error": f"{type(exc).__name__}: {exc}", "input": data.hex()})
        elapsed = clock() - t0
        if elapsed > slowest[0]:
            slowest = (elapsed, data)
        ratio = dec.stats.bytes_hashed / max(1, len(data) + len(GOOD))
        if ratio > worst_hash_ratio[0]:
            worst_hash_ratio = (ratio, data)
    return {"inputs": n_inputs, "seed": seed, "exceptions": len(exceptions),
            "first_exceptions": exceptions[:5], "good_frame_decoded_after": good_after,
            "slowest_s": slowest[0], "slowest_input": slowest[1][:64].hex(),
            "slowest_input_bytes": len(slowest[1]),
            "worst_bytes_hashed_per_byte": worst_hash_ratio[0]}


def stacked_headers(n_bytes: int) -> bytes:
    """A valid header every 20 bytes, each claiming a payload up to the end; no payload CRC
    matches. Checking each payload afresh costs n^2/40 bytes of hashing."""
    parts = []
    for start in range(0, n_bytes - fp.FRAME_OVERHEAD + 1, fp.HEADER_SIZE):
        head = HEADER.pack(fp.SYNC_WORD, fp.PROTOCOL_VERSION, fp.Heartbeat.TYPE, 0, 0,
                           n_bytes - start - fp.FRAME_OVERHEAD)
        parts.append(head + struct.pack("<I", zlib.crc32(head)))
    data = b"".join(parts)
    return data + b"\x00" * (n_bytes - len(data))


@pytest.mark.slow
def test_a_million_random_and_mutated_inputs():
    report = run_stress(1_000_000)
    assert report["exceptions"] == 0, json.dumps(report["first_exceptions"], indent=1)
    # Every input is < 400 bytes and a resynchronising check costs at most the small-payload
    # direct hash (256 bytes) per header: no input may cost more than a few hundred bytes of
    # hashing per input byte, whatever its shape.
    assert report["worst_bytes_hashed_per_byte"] < 64, report
    # the intact and garbage-separated inputs (2 of 9 kinds) at least are followed by GOOD
    assert report["good_frame_decoded_after"] > report["inputs"] * 2 / 9 * 0.9, report
    print(json.dumps(report))


@pytest.mark.slow
def test_stacked_headers_are_resynchronised_in_linear_work():
    """Work counted in bytes hashed, not seconds: the bound follows from the algorithm.

    Per header: the first failed payload is hashed once (n bytes); the prefix checkpoints are
    built once over the rest (n bytes); each later header then hashes its 20 new bytes plus at
    most STRIDE bytes from a checkpoint to its payload end. So hashed <= 2n + (20 + STRIDE)/20 n
    = 6.2 n. Quadratic resynchronisation would hash n^2/40: 2.6e4 n at 1 MiB.
    """
    ratios = {}
    for mib in (1, 8):
        n = mib << 20
        dec = fp.Decoder()
        assert dec.feed(stacked_headers(n)) == []
        assert dec.stats.frames_corrupt == (n - fp.FRAME_OVERHEAD) // fp.HEADER_SIZE + 1
        ratios[mib] = dec.stats.bytes_hashed / n
        assert ratios[mib] <= 2 + (20 + STRIDE) / 20 + 0.01, ratios
        assert dec.feed(GOOD) == [fp.Heartbeat(0xBEEF)]     # and it is not poisoned
    # linear: the work per byte does not grow with the burst (8x the bytes, same ratio +-10 %)
    assert abs(ratios[8] / ratios[1] - 1) < 0.1, ratios


def test_stacked_headers_in_small_chunks_stay_linear():
    """A trickling link must not make the work quadratic either (checkpoints persist)."""
    n = 64 << 10
    data = stacked_headers(n)
    dec = fp.Decoder()
    for i in range(0, n, 997):
        assert dec.feed(data[i:i + 997]) == []
    assert dec.stats.bytes_hashed <= (2 + (20 + STRIDE) / 20) * n + 1024 * 4, dec.stats
    assert dec.feed(GOOD) == [fp.Heartbeat(0xBEEF)]


def test_stress_smoke():
    """A short run of the stress loop, so the generator itself stays exercised in fast runs."""
    report = run_stress(3000, seed=7)
    assert report["exceptions"] == 0, report["first_exceptions"]


if __name__ == "__main__":
    print(json.dumps(run_stress(int(float(sys.argv[1])) if len(sys.argv) > 1 else 1_000_000)))
