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

from bench.common import emit, progress
from drivers.polarization.gp_scpi import GpPolarizationController
from drivers.transport import open_transport
from sim_backend.instruments.base import PtyServer, TcpServer
from sim_backend.instruments.polarization_gp import GpPolarizationSim

PAYLOAD_MB = 128
CHUNK = 1 << 20


def _sender(total: int):
    listener = socket.create_server(("127.0.0.1", 0))
    block = bytes(CHUNK)

    def run():
        conn, _ = listener.accept()
        with conn:
            sent = 0
            while sent < total:
                conn.sendall(block)
                sent += len(block)
            conn.recv(1)          # hold the line open until the reader hangs up
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def _rate(read_all) -> float:
    total = PAYLOAD_MB * CHUNK
    port, thread = _sender(total)
    t0 = time.perf_counter()
    read_all(port, total)
    dt = time.perf_counter() - t0
    thread.join(5.0)
    return total / dt / 1e6


def _transport_read_into(port: int, total: int) -> None:
    t = open_transport(f"socket://127.0.0.1:{port}", timeout_s=5.0)
    buf = bytearray(CHUNK)
    got = 0
    while got < total:
        got += t.read_into(buf)
    t.close()


def _transport_read_some(port: int, total: int) -> None:
    t = open_transport(f"socket://127.0.0.1:{port}", timeout_s=5.0)
    got = 0
    while got < total:
        got += len(t.read_some(CHUNK))
    t.close()


def _raw_socket(port: int, total: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    buf = memoryview(bytearray(CHUNK))
    got = 0
    while got < total:
        got += s.recv_into(buf)
    s.close()


def _pyserial_socket(port: int, total: int) -> None:
    s = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=5.0)
    got = 0
    while got < total:
        # its in_waiting only says "something" (0/1) for sockets, so ask for whole chunks
        got += len(s.read(CHUNK))
    s.close()


def _query_latency_us(url: str, n: int = 200) -> float:
    driver = GpPolarizationController.from_url(url, timeout_s=1.0)
    try:
        driver.measure_sop()
        t0 = time.perf_counter()
        for _ in range(n):
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
