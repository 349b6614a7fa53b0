"""Framing reads of the buffered transport under every way the bytes can be chunked."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import DeviceTimeout
from drivers.transport.buffered import BufferedTransport


class ChunkedTransport(BufferedTransport):
    """Delivers a byte stream in the given chunks, then goes silent."""

    def __init__(self, chunks):
        super().__init__("chunks://", timeout_s=0.0)
        self.chunks = deque(bytes(c) for c in chunks if c)
        self.sent = bytearray()

    def _fill(self, max_bytes, timeout_s):
        if not self.chunks:
            return b""
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    def _send(self, data):
        self.sent += data

    def _open(self):
        pass

    def _drop(self):
        pass


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


lines_st = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12)


@given(lines_st, st.lists(st.integers(0, 10_000), max_size=20))
def test_read_until_returns_each_line_whatever_the_chunking(lines, cuts):
    stream = b"".join(line + b"\n" for line in lines)
    t = ChunkedTransport(chunked(stream, cuts))
    assert [t.read_until(b"\n") for _ in lines] == [line + b"\n" for line in lines]
    with pytest.raises(DeviceTimeout):
        t.read_until(b"\n")


@given(st.binary(min_size=1, max_size=300), st.lists(st.integers(0, 10_000), max_size=20),
       st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_read_exact_and_read_some_reassemble_the_stream(data, cuts, sizes):
    t = ChunkedTransport(chunked(data, cuts))
    out = bytearray()
    i = 0
    while len(out) < len(data):
        n = sizes[i % len(sizes)]
        i += 1
        if i % 2:
            want = min(n, len(data) - len(out))
            piece = t.read_exact(want)
            assert len(piece) == want
        else:
            piece = t.read_some(n)
            assert 1 <= len(piece) <= n
        out += piece
    assert bytes(out) == data


@given(st.binary(min_size=1, max_size=100), st.integers(1, 50))
def test_short_read_raises_and_loses_nothing(data, extra):
    t = ChunkedTransport([data])
    with pytest.raises(DeviceTimeout, match=f"short read: {len(data)} of {len(data) + extra}"):
        t.read_exact(len(data) + extra)
    assert t.read_exact(len(data)) == data


def test_multibyte_terminator_split_across_chunks():
    t = ChunkedTransport([b"abc\r", b"\ndef\r", b"\n"])
    assert t.read_until(b"\r\n") == b"abc\r\n"
    assert t.read_until(b"\r\n") == b"def\r\n"


def test_read_until_gives_up_past_max_bytes():
    t = ChunkedTransport([b"x" * 100])
    with pytest.raises(DeviceTimeout, match="within 10 bytes"):
        t.read_until(b"\n", max_bytes=10)
