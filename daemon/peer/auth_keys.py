"""The authentication key pool of one link: where Wegman-Carter hash keys and pads come from.

Material starts as a pre-shared bootstrap file (``write_bootstrap`` makes it; both nodes get a
copy of the same file) and grows by ``refill`` with fresh QKD key. Refills are numbered (the
block's place in the coordinator's commit order, carried by COMMIT) and taken strictly in
number order, each once, so both nodes append the same bytes in the same order, so both see the same byte string, cut into 8-byte words that alternate
between two streams: even words authenticate Alice's messages, odd words Bob's. The two
directions therefore never share a pad, and the pad of message ``seq`` in a stream is a fixed
word of that stream, so both ends find it without talking (layout in docs/peer-protocol.md).

Durability: a pad must never serve two messages, even after kill -9. Sequence numbers are
reserved in chunks (``chunk_messages``) by writing the chunk's end to ``state.json`` with an
fsync before the first number of the chunk is used; a restarted node resumes at the reserved
end and skips what was left of the chunk. The receive side keeps a floor the same way, so a
restarted node never accepts a sequence number it may have accepted before.

Threads: the channel takes sequence numbers on the event loop while the engine refills from
its commit thread; one lock makes each change of the state and its write one step, so the file
written last holds every change (two unserialised writes of ``state.json`` could put an older
state in place after a newer one: a refill the store has already dropped would be lost).

Pad and key bytes are never logged or put into messages; ``close`` wipes the in-memory copy.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

BOOTSTRAP_MAGIC = b"QKDAUTH1"
BOOTSTRAP_HEADER = struct.Struct("<8s16sQ")    # magic, pool id, material byte count
MIN_BOOTSTRAP_BYTES = 1024
MAX_BOOTSTRAP_BYTES = 1 << 34
WORD = 8
STRIDE = 2 * WORD              # one word per stream; material grows in whole strides
MESSAGES_PER_HASH_KEY = 1 << 16
ROLES = ("alice", "bob")
STREAM_OF_ROLE = {"alice": 0, "bob": 1}


class AuthKeyError(Exception):
    """A problem with the authentication key pool, stated in one line (never key bytes)."""


class AuthKeyExhausted(AuthKeyError):
    """No pad left for this sequence number: refill the pool (or bootstrap a new one)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_bootstrap(path, n_bytes: int) -> bytes:
    """Write a fresh bootstrap file of ``n_bytes`` random bytes (mode 0600, never overwriting);
    returns its pool id. Copy the one file to both nodes over a trusted path."""
    if not isinstance(n_bytes, int) or not MIN_BOOTSTRAP_BYTES <= n_bytes <= MAX_BOOTSTRAP_BYTES:
        raise AuthKeyError(f"bootstrap size {n_bytes!r} bytes outside "
                           f"{MIN_BOOTSTRAP_BYTES}..{MAX_BOOTSTRAP_BYTES}")
    n_bytes -= n_bytes % STRIDE
    path = Path(path)
    pool_id = secrets.token_bytes(16)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, BOOTSTRAP_HEADER.pack(BOOTSTRAP_MAGIC, pool_id, n_bytes))
        left = n_bytes
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            os.write(fd, chunk)
            left -= len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)          # fails if the file exists: never overwrite a bootstrap
    except FileExistsError:
        raise AuthKeyError(f"bootstrap file {path} exists already; refusing to overwrite it")
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return pool_id


def read_bootstrap(path) -> tuple[bytes, bytearray]:
    """(pool id, material) of a bootstrap file, checked for its magic and length."""
    path = Path(path)
    try:
        data = bytearray(path.read_bytes())
    except OSError as exc:
        raise AuthKeyError(f"cannot read bootstrap file {path}: {exc.strerror}") from None
    if len(data) < BOOTSTRAP_HEADER.size:
        raise AuthKeyError(f"bootstrap file {path} is too short to be one")
    magic, pool_id, n = BOOTSTRAP_HEADER.unpack_from(data)
    if magic != BOOTSTRAP_MAGIC:
        raise AuthKeyError(f"{path} is not a bootstrap file (magic {magic!r})")
    if len(data) != BOOTSTRAP_HEADER.size + n or n % STRIDE:
        raise AuthKeyError(f"bootstrap file {path} is truncated or damaged "
                           f"({len(data) - BOOTSTRAP_HEADER.size} bytes, header says {n})")
    material = data[BOOTSTRAP_HEADER.size:]
    data[:] = bytes(len(data))
    return pool_id, material


def key_and_pad_words(seq: int) -> tuple[int, int]:
    """Stream word indices of the hash key and of the pad for message ``seq``."""
    epoch, i = divmod(seq, MESSAGES_PER_HASH_KEY)
    key_word = epoch * (MESSAGES_PER_HASH_KEY + 1)
    return key_word, key_word + 1 + i


def _seqs_below_word(n_words: int) -> int:
    """How many sequence numbers have their pad among the first ``n_words`` stream words."""
    epoch, rest = divmod(n_words, MESSAGES_PER_HASH_KEY + 1)
    return epoch * MESSAGES_PER_HASH_KEY + max(0, rest - 1)


@dataclass
class PoolStatus:
    pool_id: str
    material_bytes: int
    send_next: int
    recv_floor: int
    send_messages_left: int
    recv_messages_left: int
    low: bool


class AuthKeyPool:
    """One node's view of one link's authentication key material (see the module docstring)."""

    STATE = "state.json"
    MATERIAL = "material.bin"
    LOCK = "lock"

    def __init__(self, directory, *, local_role: str, bootstrap=None,
                 chunk_messages: int = 1024, low_water_messages: int = 16384):
        if local_role not in ROLES:
            raise AuthKeyError(f"local role {local_role!r} is not one of {ROLES}")
        if not isinstance(chunk_messages, int) or not 1 <= chunk_messages <= 1 << 20:
            raise AuthKeyError(f"chunk_messages {chunk_messages!r} outside 1..{1 << 20}")
        self.directory = Path(directory)
        self.local_role = local_role
        self.send_stream = STREAM_OF_ROLE[local_role]
        self.recv_stream = 1 - self.send_stream
        self.chunk_messages = chunk_messages
        self.low_water_messages = low_water_messages
        self._state_lock = threading.Lock()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / self.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise AuthKeyError(f"authentication key pool {self.directory} is in use by "
                               "another process") from None
        try:
            self._open(bootstrap)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- files -------------------------------------------------------------------------------

    def _open(self, bootstrap) -> None:
        state_path = self.directory / self.STATE
        material_path = self.directory / self.MATERIAL
        if not state_path.exists():
            if bootstrap is None:
                raise AuthKeyError(f"authentication key pool {self.directory} is empty and no "
                                   "bootstrap file was given")
            pool_id, material = read_bootstrap(bootstrap)
            _atomic_write(material_path, bytes(material))
            self._material = material
            self._state = {"version": 1, "pool_id": pool_id.hex(), "local_role": self.local_role,
                           "material_bytes": len(material), "send_reserved": 0,
                           "recv_reserved": 0, "next_refill": 0}
            self._save()
        else:
            try:
                self._state = json.loads(state_path.read_text())
            except (OSError, ValueError) as exc:
                raise AuthKeyError(f"cannot read pool state {state_path}: {exc}") from None
            if self._state.get("local_role") != self.local_role:
                raise AuthKeyError(f"pool {self.directory} belongs to role "
                                   f"{self._state.get('local_role')!r}, not {self.local_role!r}")
            if bootstrap is not None:
                pool_id, material = read_bootstrap(bootstrap)
                material[:] = bytes(len(material))
                if pool_id.hex() != self._state["pool_id"]:
                    raise AuthKeyError(f"bootstrap file {bootstrap} is not the one pool "
                                       f"{self.directory} was started from")
            n = self._state["material_bytes"]
            with open(material_path, "r+b") as f:
                f.truncate(n)          # drop a refill torn by a crash before it was committed
                f.seek(0)
                self._material = bytearray(f.read())
            if len(self._material) != n:
                raise AuthKeyError(f"pool material {material_path} is shorter than its state says")
        self._state.setdefault("next_refill", 0)
        self._state.pop("refills", None)     # the list of block ids of earlier versions
        self.send_next = self._state["send_reserved"]
        self.recv_floor = self._state["recv_reserved"]

    def _save(self) -> None:
        _atomic_write(self.directory / self.STATE, json.dumps(self._state).encode())

    @property
    def pool_id(self) -> bytes:
        return bytes.fromhex(self._state["pool_id"])

    def close(self) -> None:
        if self._lock_fd is not None:
            self._material[:] = bytes(len(self._material))
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- material ------------------------------------------------------------------------------

    def _word(self, stream: int, index: int) -> int | None:
        off = index * STRIDE + stream * WORD
        if off + WORD > len(self._material):
            return None
        return int.from_bytes(self._material[off:off + WORD], "little")

    def _keys(self, stream: int, seq: int) -> tuple[int, int] | None:
        key_word, pad_word = key_and_pad_words(seq)
        pad = self._word(stream, pad_word)
        if pad is None:
            return None
        return self._word(stream, key_word), pad

    def send_keys(self, seq: int) -> tuple[int, int]:
        """(hash key, pad) for our message ``seq``; the seq must come from ``take_send_seq``."""
        k = self._keys(self.send_stream, seq)
        if k is None:
            raise AuthKeyExhausted(f"authentication key pool {self.directory} has no pad for "
                                   f"send sequence number {seq}: refill it")
        return k

    def recv_keys(self, seq: int) -> tuple[int, int] | None:
        """(hash key, pad) for the peer's message ``seq``, or None if there is none to use."""
        if seq < self.recv_floor:
            return None
        return self._keys(self.recv_stream, seq)

    def messages_left(self, stream: int, next_seq: int) -> int:
        return max(0, _seqs_below_word(len(self._material) // STRIDE) - next_seq)

    # -- consumption ---------------------------------------------------------------------------

    def _round_up(self, seq: int) -> int:
        c = self.chunk_messages
        return -(-seq // c) * c

    def take_send_seq(self) -> int:
        """The next send sequence number, durably reserved (one fsync per chunk)."""
        with self._state_lock:
            seq = self.send_next
            if seq >= self._state["send_reserved"]:
                self._state["send_reserved"] = self._round_up(seq + 1)
                self._save()
            self.send_next = seq + 1
            return seq

    def skip_send_to(self, seq: int) -> None:
        """Never send below ``seq`` (the peer's receive floor announced in its hello)."""
        self.send_next = max(self.send_next, seq)

    def skip_send_to_chunk(self) -> None:
        """Move to the next chunk boundary: done on every new connection, so that a peer that
        restarted (and so rounded its receive floor up to a boundary) accepts what we send."""
        self.send_next = self._round_up(self.send_next)

    def mark_received(self, seq: int) -> None:
        """The peer's message ``seq`` verified: never accept ``seq`` or anything below again."""
        if seq < self.recv_floor:
            raise AuthKeyError(f"receive sequence number {seq} below the floor {self.recv_floor}")
        with self._state_lock:
            self.recv_floor = seq + 1
            if self.recv_floor > self._state["recv_reserved"]:
                self._state["recv_reserved"] = self._round_up(self.recv_floor)
                self._save()

    @property
    def next_refill(self) -> int:
        """The number of the next refill this pool takes (refills are numbered from 0)."""
        return self._state["next_refill"]

    def refill(self, data, index: int) -> int:
        """Append refill number ``index`` of fresh QKD key; returns the bytes taken.

        Both nodes number the refills alike (the block's place in the coordinator's commit
        order) and take them in that order, so both pools hold the same bytes. A refill taken
        already (a repeat after a crash) is ignored; one out of order is refused, as taking it
        would make this pool differ from the peer's. A whole number of 16-byte strides is
        taken and the rest left out (the same at both ends). The bytes and the new count are
        durable together: the state file, written last, says how much of the material is valid.
        """
        with self._state_lock:
            nxt = self._state["next_refill"]
            if index < nxt:
                return 0
            if index > nxt:
                raise AuthKeyError(f"authentication key pool {self.directory}: refill {index} "
                                   f"before refill {nxt}")
            data = memoryview(data).cast("B")
            n = len(data) - len(data) % STRIDE
            if n:
                path = self.directory / self.MATERIAL
                with open(path, "r+b") as f:
                    f.seek(self._state["material_bytes"])
                    f.write(data[:n])
                    f.flush()
                    os.fsync(f.fileno())
                self._material += data[:n]
            self._state["material_bytes"] = len(self._material)
            self._state["next_refill"] = nxt + 1
            self._save()
            return n

    # -- figures -------------------------------------------------------------------------------

    def status(self) -> PoolStatus:
        send_left = self.messages_left(self.send_stream, self.send_next)
        recv_left = self.messages_left(self.recv_stream, self.recv_floor)
        return PoolStatus(pool_id=self._state["pool_id"], material_bytes=len(self._material),
                          send_next=self.send_next, recv_floor=self.recv_floor,
                          send_messages_left=send_left, recv_messages_left=recv_left,
                          low=min(send_left, recv_left) < self.low_water_messages)

    @property
    def low(self) -> bool:
        """The low-pool alarm: fewer than ``low_water_messages`` left in either direction."""
        return self.status().low
