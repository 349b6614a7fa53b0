"""Board event stream through the QkdBoard driver over TCP loopback, as numpy arrays.

The simulated Bob board runs in replay mode (pre-generated batches of 65536 events, re-framed
with fresh sequence numbers and windows) so the figure measures the byte path (board framing,
kernel loopback, transport, decoder, queue) rather than the physics. The board's server
threads share this process (and its GIL) with the driver, as in the tests.
Baseline: the same board stream read by a raw socket ``recv_into`` loop with no decoding.
"""

from __future__ import annotations

import socket
import time

import numpy as np

import firmware_protocol as fp
from bench.common import Deadline, emit, progress
from drivers.board import QkdBoard
from sim_backend.board import ReplayBatch, SimBoard

EVENTS_PER_BATCH = 65536
N_REPLAY = 16
N_BATCHES = 300
BATCH_WINDOW_PS = 65536 * 10_000


def replay_batches(seed: int = 3) -> list[ReplayBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N_REPLAY):
        offsets = np.sort(rng.integers(0, BATCH_WINDOW_PS, EVENTS_PER_BATCH))
        out.append(ReplayBatch(offsets, rng.integers(0, 4, EVENTS_PER_BATCH).astype(np.uint8),
                               BATCH_WINDOW_PS))
    return out


READER_DEADLINE_S = 120.0   # the whole stream takes seconds; a stall fails loudly


def driver_rate(board: SimBoard) -> tuple[float, int]:
    driver = QkdBoard.from_url(board.url, timeout_s=5.0)
    deadline = Deadline(READER_DEADLINE_S, "board driver reader")
    try:
        driver.start_acquisition()
        driver.read_events(timeout_s=5.0)            # stream running before the clock starts
        n = 0
        t0 = time.perf_counter()
        for i in range(N_BATCHES):
            batch = driver.read_events(timeout_s=min(5.0, deadline.left(
                f"{i} of {N_BATCHES} batches")))
            n += batch.timestamps_ps.size
        dt = time.perf_counter() - t0
        driver.stop_acquisition()
        lost = driver.stream_stats.batches_lost
    finally:
        driver.close()
    assert lost == 0
    return n / dt, n


def raw_socket_rate(board: SimBoard, n_bytes: int) -> float:
    sock = socket.create_connection((board.host, board.port), timeout=5.0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    buf = memoryview(bytearray(1 << 20))
    deadline = Deadline(READER_DEADLINE_S, "raw socket reader")
    try:
        sock.sendall(fp.Encoder().encode(fp.StartAcquisition()))
        got = 0
        while got < (1 << 20):            # warm-up: stream running
            sock.settimeout(min(5.0, deadline.left("warm-up")))
            got += sock.recv_into(buf)
        got = 0
        t0 = time.perf_counter()
        while got < n_bytes:
            sock.settimeout(min(5.0, deadline.left(f"{got} of {n_bytes} bytes")))
            got += sock.recv_into(buf)
        return got / (time.perf_counter() - t0)
    finally:
        sock.close()


def main() -> None:
    progress("preparing replay batches")
    with SimBoard(fp.Role.BOB, replay=replay_batches()) as board:
        rate, n = driver_rate(board)
        emit("board_stream", figure="driver_events_per_s", value=rate, unit="events/s",
             events=n, events_per_batch=EVENTS_PER_BATCH, target=20e6, meets_target=rate >= 20e6)
        frame_bytes = fp.FRAME_OVERHEAD + 24 + 8 * EVENTS_PER_BATCH
        raw = raw_socket_rate(board, N_BATCHES * frame_bytes)
        raw_events = raw / (frame_bytes / EVENTS_PER_BATCH)
        emit("board_stream", figure="baseline_raw_recv_events_per_s", value=raw_events,
             unit="events/s", mbyte_per_s=raw / 1e6)
        emit("board_stream", figure="driver_vs_raw_recv", value=rate / raw_events, unit="x")


if __name__ == "__main__":
    main()
