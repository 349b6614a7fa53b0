"""Every benchmark reader has a deadline and fails loudly when its bytes stop coming (issue 7,
defect 9: ``make bench`` hung in the pyserial ``socket://`` baseline)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bench import bench_transport
from bench.common import BenchDeadlineExceeded, Deadline

DEADLINE_S = 0.5


def _stalling_sender(n_bytes: int):
    """Sends ``n_bytes`` then keeps the connection open, silent (a stalled peer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def run():
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(1) == bench_transport._READY
            conn.sendall(bytes(n_bytes))
            release.wait(10)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], release


@pytest.mark.parametrize("reader", [bench_transport._raw_socket, bench_transport._pyserial_socket,
                                    bench_transport._transport_read_into,
                                    bench_transport._transport_read_some],
                         ids=lambda f: f.__name__)
def test_a_stalled_stream_ends_in_an_error_naming_the_reader(reader):
    port, release = _stalling_sender(1000)
    t0 = time.monotonic()
    try:
        with pytest.raises(BenchDeadlineExceeded, match=r"1000 of 5000 bytes"):
            reader(port, 5000, Deadline(DEADLINE_S, reader.__name__))
    finally:
        release.set()
    # a read blocks at most min(5 s, what is left): the deadline plus one scheduling slice
    assert time.monotonic() - t0 < DEADLINE_S + 1.0


@pytest.mark.parametrize("reader", [bench_transport._raw_socket, bench_transport._pyserial_socket],
                         ids=lambda f: f.__name__)
def test_an_exact_stream_finishes_without_waiting_for_a_timeout(reader):
    """The old pyserial loop asked for a whole chunk past the end and sat in poll."""
    port, release = _stalling_sender(3 * bench_transport.CHUNK + 123)
    t0 = time.monotonic()
    try:
        reader(port, 3 * bench_transport.CHUNK + 123, Deadline(30.0, reader.__name__))
    finally:
        release.set()
    assert time.monotonic() - t0 < 2.0      # pyserial's own timeout is 5 s
