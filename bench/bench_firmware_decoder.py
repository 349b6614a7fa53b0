"""Decoder throughput for detection-event batches, fed in 1 MiB pieces as from a socket.

Baseline: a plain per-event ``struct.unpack_from`` loop over the same payload (run on a
smaller sample and expressed per event), i.e. what a straightforward Python decoder would do.
"""

from __future__ import annotations

import struct
import time

import numpy as np

import firmware_protocol as fp
from bench.common import best_time, emit, progress

N_BATCHES = 64
EVENTS_PER_BATCH = 65536
PIECE_BYTES = 1 << 20
BASELINE_EVENTS = 200_000


def make_stream(seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    enc = fp.Encoder()
    frames = []
    t = 0
    for b in range(N_BATCHES):
        gaps = rng.integers(1, 20_000, EVENTS_PER_BATCH)
        ts = t + np.cumsum(gaps)
        ch = rng.integers(0, 4, EVENTS_PER_BATCH).astype(np.uint8)
        t_end = int(ts[-1]) + 1
        frames.append(enc.encode(fp.EventBatch(b, t, t_end, ts, ch)))
        t = t_end
    return b"".join(frames)


def decode_stream(stream: memoryview) -> int:
    dec = fp.Decoder()
    n = 0
    for i in range(0, len(stream), PIECE_BYTES):
        for msg in dec.feed(stream[i:i + PIECE_BYTES]):
            n += msg.timestamps_ps.size
    return n


def naive_decode(payload: bytes, t_start: int, n: int):
    ts = []
    ch = []
    for i in range(n):
        (w,) = struct.unpack_from("<Q", payload, 24 + 8 * i)
        ts.append(t_start + (w >> 6))
        ch.append(w & 63)
    return ts, ch


def main() -> None:
    progress("building event stream")
    stream = make_stream()
    view = memoryview(stream)
    total = N_BATCHES * EVENTS_PER_BATCH
    assert decode_stream(view) == total
    dt = best_time(lambda: decode_stream(view), repeat=5)
    rate = total / dt
    emit("firmware_decoder", figure="decoder_events_per_s", value=rate, unit="events/s",
         events=total, batches=N_BATCHES, piece_bytes=PIECE_BYTES, mbyte_per_s=len(stream) / dt / 1e6,
         target=50e6, meets_target=rate >= 50e6)

    batch = fp.EventBatch(0, 0, 2**40, np.arange(BASELINE_EVENTS, dtype=np.int64) * 1000,
                          np.zeros(BASELINE_EVENTS, np.uint8))
    payload = b"".join(bytes(memoryview(p).cast("B")) for p in batch.pack_payload())
    t0 = time.perf_counter()
    naive_decode(payload, 0, BASELINE_EVENTS)
    base_rate = BASELINE_EVENTS / (time.perf_counter() - t0)
    emit("firmware_decoder", figure="baseline_struct_unpack_events_per_s", value=base_rate,
         unit="events/s", events=BASELINE_EVENTS)
    emit("firmware_decoder", figure="speedup_vs_struct_unpack", value=rate / base_rate, unit="x")


if __name__ == "__main__":
    main()
