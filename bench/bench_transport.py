"""Byte-path figures of ``drivers.transport``: bulk TCP throughput and command round trips.

Throughput: a sender thread in this process pushes a fixed payload over loopback; the reader is
``TcpTransport.read_into`` (what the board driver uses), ``TcpTransport.read_some``, and two
baselines in the same run: a raw socket ``recv_into`` loop (the ceiling) and pyserial's own
``socket://`` handler (what a naive ``serial_for_url`` transport would give).
Latency: one ``:MEAS:SOP?`` query/reply to the simulated GP controller over raw TCP, pyvisa-py
and a pty.
"""

from __future__ import annotations

import socket
import threading
import time

import serial

from bench.common import Deadline, emit, progress
from drivers.errors import DeviceTimeout
from drivers.polarization.gp_scpi import GpPolarizationController
from drivers.transport import open_transport
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.polarization_gp import GpPolarizationSim

PAYLOAD_MB = 128
CHUNK = 1 << 20
READER_DEADLINE_S = 60.0     # 128 MiB over loopback takes < 2 s even for the slowest reader


def _sender(total: int):
    listener = socket.create_server(("127.0.0.1", 0))
    block = bytes(CHUNK)

    def run():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(READER_DEADLINE_S)
            sent = 0
            try:
                conn.recv(1)          # the reader's "ready" byte, see _READY
                while sent < total:
                    conn.sendall(block)
                    sent += len(block)
                conn.recv(1)          # hold the line open until the reader hangs up
            except OSError:
                pass                  # the reader gave up (its deadline) or hung up early
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def _rate(read_all) -> float:
    total = PAYLOAD_MB * CHUNK
    port, thread = _sender(total)
    deadline = Deadline(READER_DEADLINE_S, f"reader {read_all.__name__}")
    t0 = time.perf_counter()
    read_all(port, total, deadline)
    dt = time.perf_counter() - t0
    thread.join(5.0)
    return total / dt / 1e6


_READY = b"g"
"""Sent by each reader once its port is open; only then does the sender start. pyserial's
``socket://`` handler flushes its input while opening, so bytes sent before that were lost and
the old reader waited for them forever (the ``make bench`` hang)."""


def _note(got: int, total: int) -> str:
    return f"{got} of {total} bytes"


def _deadline_or_raise(deadline: Deadline, got: int, total: int, exc: Exception):
    """A library timeout at the deadline becomes the benchmark's loud error."""
    deadline.left(_note(got, total))
    raise exc


def _transport_read_into(port: int, total: int, deadline: Deadline) -> None:
    t = open_transport(f"socket://127.0.0.1:{port}", timeout_s=5.0)
    t.write(_READY)
    buf = bytearray(CHUNK)
    got = 0
    try:
        while got < total:
            try:
                got += t.read_into(buf, min(5.0, deadline.left(_note(got, total))))
            except DeviceTimeout as exc:
                _deadline_or_raise(deadline, got, total, exc)
    finally:
        t.close()


def _transport_read_some(port: int, total: int, deadline: Deadline) -> None:
    t = open_transport(f"socket://127.0.0.1:{port}", timeout_s=5.0)
    t.write(_READY)
    got = 0
    try:
        while got < total:
            try:
                got += len(t.read_some(min(CHUNK, total - got),
                                       min(5.0, deadline.left(_note(got, total)))))
            except DeviceTimeout as exc:
                _deadline_or_raise(deadline, got, total, exc)
    finally:
        t.close()


def _raw_socket(port: int, total: int, deadline: Deadline) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=deadline.left())
    s.sendall(_READY)
    buf = memoryview(bytearray(CHUNK))
    got = 0
    try:
        while got < total:
            s.settimeout(deadline.left(_note(got, total)))
            try:
                got += s.recv_into(buf[:min(CHUNK, total - got)])
            except TimeoutError as exc:
                _deadline_or_raise(deadline, got, total, exc)
    finally:
        s.close()


def _pyserial_socket(port: int, total: int, deadline: Deadline) -> None:
    # pyserial's socket:// read(n) waits for all n bytes or its timeout: ask for exactly what
    # is still due (a whole chunk past the end waited in poll), and never past the deadline
    s = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=5.0)
    s.write(_READY)
    got = 0
    try:
        while got < total:
            s.timeout = min(5.0, deadline.left(_note(got, total)))
            got += len(s.read(min(CHUNK, total - got)))
    finally:
        s.close()


def _query_latency_us(url: str, n: int = 200) -> float:
    # each query is firm within the driver's 1 s timeout; the loop has a deadline of its own
    driver = GpPolarizationController.from_url(url, timeout_s=1.0)
    deadline = Deadline(READER_DEADLINE_S, f"query round trips over {url}")
    try:
        driver.measure_sop()
        t0 = time.perf_counter()
        for i in range(n):
            deadline.left(f"{i} of {n} queries")
            driver.measure_sop()
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        driver.close()


def main() -> None:
    progress(f"streaming {PAYLOAD_MB} MiB over loopback per reader")
    baseline = _rate(_raw_socket)
    emit("transport", figure="tcp_throughput", reader="raw socket recv_into (baseline)",
         mb_per_s=round(baseline, 1))
    naive = _rate(_pyserial_socket)
    emit("transport", figure="tcp_throughput", reader="pyserial socket:// (baseline)",
         mb_per_s=round(naive, 1))
    for label, reader in (("TcpTransport.read_into", _transport_read_into),
                          ("TcpTransport.read_some", _transport_read_some)):
        rate = _rate(reader)
        emit("transport", figure="tcp_throughput", reader=label, mb_per_s=round(rate, 1),
             ratio_to_raw_socket=round(rate / baseline, 3),
             ratio_to_pyserial=round(rate / naive, 2))
    sim = GpPolarizationSim()
    with TcpServer(sim) as tcp, PtyServer(sim) as pty:
        for path, url in (("socket://", tcp.url), ("pyvisa-py SOCKET", tcp.visa_resource),
                          ("pty serial", pty.url)):
            emit("transport", figure="query_round_trip", path=path,
                 us_per_query=round(_query_latency_us(url), 1))


if __name__ == "__main__":
    main()
