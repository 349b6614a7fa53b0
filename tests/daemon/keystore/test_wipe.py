"""wipe_bytes zeroes a bytes object in place and leaves CPython's shared ones alone."""

from __future__ import annotations

import os

import pytest

from daemon.keystore.wipe import wipe_bytes


@pytest.mark.parametrize("n", [2, 3, 31, 32, 4096, 1 << 20])
def test_every_byte_is_zeroed_and_the_length_kept(n):
    data = os.urandom(n - 1) + b"\x01"            # never all zero before
    wipe_bytes(data)
    assert len(data) == n and data == bytes(n)


def test_shared_short_objects_and_none_are_left_alone():
    one = b"z"
    wipe_bytes(one)
    wipe_bytes(b"")
    wipe_bytes(None)
    assert one == b"z" and bytes([122]) == b"z"


@pytest.mark.parametrize("other", [bytearray(b"key"), memoryview(b"key"), "key"])
def test_anything_but_bytes_is_refused(other):
    with pytest.raises(TypeError, match="bytes"):
        wipe_bytes(other)
