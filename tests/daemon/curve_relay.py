"""An attacker inside CurveZMQ: a relay that holds both nodes' CURVE keys (tests only).

CurveZMQ stops anyone without the pinned keys (``peer_proxy`` shows that below it). This relay
models the stronger adversary the Wegman-Carter tags exist for: one who terminates CurveZMQ at
both ends — a CURVE server with Alice's keypair for Bob to connect to, a CURVE client with Bob's
keypair connected to Alice — and so sees and rewrites every envelope. It forwards frames as
they are unless told to damage the next block-role frame going one way:

- ``tamper``: flip one payload bit (the tag no longer verifies);
- ``replay``: send the frame, then the same frame again;
- ``reorder``: hold the frame and send it after the next one;
- ``foreign``: rewrite the link id to another link's;
- ``garbage``: send 40 bytes that are no envelope, then the frame.

``drop_all`` loses every frame while set (the network path is cut without a disconnect).
Directions: ``to_alice`` (Bob's frames) and ``to_bob``.
"""

from __future__ import annotations

import struct
import threading

import zmq

DIRECTIONS = ("to_alice", "to_bob")
FAULTS = ("tamper", "replay", "reorder", "foreign", "garbage")
_KIND, _MSG_TYPE, _LINK = 5, 6, 8           # byte offsets in the envelope header
_HEADER = 36
_ROLE_TYPES = range(1, 16)                  # block-role messages (postprocessing.block)


class CurveRelay:
    def __init__(self, alice_endpoint: str, alice_keys: tuple[bytes, bytes],
                 bob_keys: tuple[bytes, bytes]):
        self._ctx = zmq.Context()
        self.front = self._ctx.socket(zmq.DEALER)          # Bob connects here
        self.front.linger = 0
        self.front.curve_server = True
        self.front.curve_publickey, self.front.curve_secretkey = alice_keys
        port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.back = self._ctx.socket(zmq.DEALER)           # to Alice
        self.back.linger = 0
        self.back.curve_publickey, self.back.curve_secretkey = bob_keys
        self.back.curve_serverkey = alice_keys[0]
        self.back.connect(alice_endpoint)
        self._faults: dict[str, list[str]] = {d: [] for d in DIRECTIONS}
        self.done: dict[str, list[tuple[str, int, int]]] = {d: [] for d in DIRECTIONS}
        self.forwarded = {d: 0 for d in DIRECTIONS}
        self.drop_all = False
        self._held: dict[str, bytes | None] = {d: None for d in DIRECTIONS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="curve-relay", daemon=True)
        self._thread.start()

    def inject(self, direction: str, fault: str, msg_type: int | None = None) -> None:
        """Damage the next block-role frame going ``direction`` (of ``msg_type`` if given)."""
        assert direction in DIRECTIONS and fault in FAULTS
        with self._lock:
            self._faults[direction].append((fault, msg_type))

    def pending(self, direction: str) -> int:
        with self._lock:
            return len(self._faults[direction])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.front.close(0)
        self.back.close(0)
        self._ctx.term()

    # -- the relay thread ---------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(50):
                frame = sock.recv()
                if sock is self.front:
                    self._forward("to_alice", frame, self.back)
                else:
                    self._forward("to_bob", frame, self.front)

    def _forward(self, direction: str, frame: bytes, out) -> None:
        if self.drop_all:
            return
        held = self._held[direction]
        fault = None
        if len(frame) > _HEADER and frame[_KIND] == 0 and frame[_MSG_TYPE] in _ROLE_TYPES:
            with self._lock:
                queue = self._faults[direction]
                if queue and queue[0][1] in (None, frame[_MSG_TYPE]):
                    fault = queue.pop(0)[0]
        if fault is not None:
            block = struct.unpack_from("<Q", frame, 16)[0]
            self.done[direction].append((fault, block, frame[_MSG_TYPE]))
        frames: list[bytes]
        if fault == "tamper":
            damaged = bytearray(frame)
            damaged[_HEADER] ^= 0x01
            frames = [bytes(damaged)]
        elif fault == "replay":
            frames = [frame, frame]
        elif fault == "reorder":
            self._held[direction] = frame
            return
        elif fault == "foreign":
            damaged = bytearray(frame)
            link = struct.unpack_from("<I", damaged, _LINK)[0]
            struct.pack_into("<I", damaged, _LINK, link ^ 0x5A5A5A5A)
            frames = [bytes(damaged)]
        elif fault == "garbage":
            frames = [b"\x00" * 40, frame]
        else:
            frames = [frame]
        if held is not None:
            frames.append(held)            # the held frame goes after the next one
            self._held[direction] = None
        for f in frames:
            out.send(f)
            self.forwarded[direction] += 1
