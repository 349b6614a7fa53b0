"""Simulated QKD timing board (Alice or Bob role) speaking firmware_protocol over TCP.

The twin of the real FPGA board one level down: it serves the real bytes on 127.0.0.1, so the
driver under test is the production ``drivers.board.QkdBoard``. Both boards of a simulated pair
share one ``LinkSimulator``: Bob's board turns ``run_slots`` chunks into EventBatch frames, Alice's
board answers pattern requests from ``alice_pattern`` (stateless per slot, so it agrees with what
the physics sent). A thread per connection reads requests; Bob's event stream runs in its own
thread and shares the connection's send lock.

Batch windows: a chunk of slots ``[s0, s1)`` closes its window at the nominal Bob-clock time of
slot ``s1`` minus ``margin_ps`` (half a slot plus ten jitter sigmas); events at or after that
boundary are carried into the next batch, so windows are adjacent and every event lies inside
its batch's window. An event earlier than its window start (a > 10-sigma jitter excursion)
is moved to the window start and counted in ``stats.events_clamped``.

Faults (``board.faults``) drop chosen batches (a sequence gap the host must report), cut the
connection in the middle of a batch frame, or put garbage bytes before every batch.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from firmware_protocol import (PARAMETERS, Ack, Capability, Decoder, DetectorReading, Encoder,
                               ErrorCode, EventBatch, GetParameter, Heartbeat, HeartbeatReply,
                               IdentifyReply, IdentifyRequest, MalformedPayload, Message,
                               ModulatorCalibration, Nack, ParameterValue, ParamId, PatternReply,
                               PatternRequest, PatternUpload, ProtocolAnomaly, Role, SetParameter,
                               StartAcquisition, StopAcquisition, Telemetry, TelemetryRequest,
                               UnknownMessage, UnsupportedVersion, first_invalid_pattern_byte)
from firmware_protocol.messages import PATTERN_REQUEST_MAX_SLOTS
from firmware_protocol.wire_facts import MODULATOR_DRIVE_MAX_V, MODULATOR_DRIVE_MIN_V
from firmware_protocol.events import pack_event_words
from firmware_protocol.params import READ_ONLY
from firmware_protocol.framing import FLAG_REPLY
from sim_backend.controls import LinkControls
from sim_backend.instruments.base import hang_up

MODEL = "QKD-TB1 (simulated)"
FIRMWARE_VERSION = "sim-1.0"


DEFAULT_BATCH_SLOTS = 1 << 20

_CAPABILITIES = {
    Role.ALICE: (Capability.PATTERN_MEMORY | Capability.MODULATOR | Capability.DECOY
                 | Capability.SYNC | Capability.PATTERN_UPLOAD),
    Role.BOB: Capability.EVENT_STREAM | Capability.TELEMETRY | Capability.SYNC,
}


@dataclass
class BoardFaults:
    drop_batches: set[int] = field(default_factory=set)   # batch_seq numbers never sent
    cut_in_batch: int | None = None                       # send half of this batch, then hang up
    garbage_before_batches: bytes = b""                   # written before every batch frame
    silent: bool = False                                  # requests are read, never answered


@dataclass
class BoardStats:
    batches_sent: int = 0
    events_sent: int = 0
    batches_dropped: int = 0
    events_dropped: int = 0
    events_clamped: int = 0
    requests: int = 0


@dataclass(frozen=True)
class ReplayBatch:
    """A pre-generated batch for replay mode: offsets from the window start, channels, window."""

    offsets_ps: np.ndarray
    channels: np.ndarray
    window_ps: int


def _param_defaults(link) -> dict:
    values = {p: spec.coerce(spec.minimum) for p, spec in PARAMETERS.items()}
    values.update({ParamId.CLOCK_HZ: 1e9, ParamId.SYNC_PERIOD: 1000, ParamId.MU: 0.5,
                   ParamId.NU1: 0.1, ParamId.NU2: 0.0, ParamId.P_SIGNAL: 1.0,
                   ParamId.P_DECOY1: 0.0, ParamId.P_BASIS_X: 0.5, ParamId.GATE_WIDTH_PS: 500,
                   ParamId.DEAD_TIME_NS: 100.0, ParamId.DETECTOR_ENABLE_MASK: 0xF,
                   ParamId.BATCH_SLOTS: DEFAULT_BATCH_SLOTS})
    params = getattr(link, "params", None)
    if params is not None:
        for pid, attr in ((ParamId.CLOCK_HZ, "clock_hz"), (ParamId.SYNC_PERIOD, "sync_period"),
                          (ParamId.MU, "mu"), (ParamId.NU1, "nu1"), (ParamId.NU2, "nu2"),
                          (ParamId.P_SIGNAL, "p_signal"), (ParamId.P_DECOY1, "p_decoy1"),
                          (ParamId.P_BASIS_X, "p_basis_x"), (ParamId.DEAD_TIME_NS, "dead_time_ns")):
            if hasattr(params, attr):
                values[pid] = PARAMETERS[pid].coerce(getattr(params, attr))
    if hasattr(link, "sync_key"):
        values[ParamId.SYNC_KEY] = int(link.sync_key)
    return values


class SimBoard:
    """One simulated board on ``127.0.0.1:port`` (port 0 = ephemeral); ``url`` for the driver.

    ``link`` is a LinkSimulator (or anything with ``run_slots``/``alice_pattern``/``params``);
    Bob needs it unless ``replay`` batches are given. ``realtime`` paces Bob's batches to the
    simulated clock (a batch leaves once its window has passed) instead of streaming as fast as
    possible.
    """

    def __init__(self, role: Role, link=None, controls: LinkControls | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, serial: str | None = None,
                 realtime: bool = False, replay: list[ReplayBatch] | None = None):
        self.role = Role(role)
        if self.role is Role.BOB and link is None and not replay:
            raise ValueError("a Bob board needs a link simulator or replay batches")
        self.link = link
        self.controls = controls if controls is not None else getattr(link, "controls", None) \
            or LinkControls()
        self.serial = serial or f"SIM-{self.role.name}-0001"
        self.realtime = realtime
        self.faults = BoardFaults()
        self.stats = BoardStats()
        self.parameters = _param_defaults(link)
        self.calibration: ModulatorCalibration | None = None
        self.uploaded_patterns: dict[int, np.ndarray] = {}   # first_slot -> pattern bytes
        self._replay = self._prepack(replay) if replay else None
        self._lock = threading.RLock()
        self._acquiring_conn: _Connection | None = None
        self._started = time.monotonic()
        self._conns: set[_Connection] = set()
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(4)
        self.host, self.port = self._listener.getsockname()[:2]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"sim-board-{self.role.name}-{self.port}")
        self._accept_thread.start()

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    @property
    def acquiring(self) -> bool:
        return self._acquiring_conn is not None

    # -- server ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
            conn.start()

    def drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        hang_up(self._listener)
        self.drop_connections()
        self._accept_thread.join(timeout=2.0)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- request handling (called from connection threads) -----------------------------------

    def handle(self, conn: _Connection, msg) -> Message | None:
        self.stats.requests += 1
        if isinstance(msg, ProtocolAnomaly):
            return self._nack_anomaly(msg)
        if isinstance(msg, IdentifyRequest):
            return IdentifyReply(self.role, _CAPABILITIES[self.role], MODEL, FIRMWARE_VERSION,
                                 self.serial)
        if isinstance(msg, Heartbeat):
            return HeartbeatReply(msg.token, int((time.monotonic() - self._started) * 1000),
                                  self.acquiring)
        if isinstance(msg, (SetParameter, GetParameter)):
            return self._parameter(msg)
        if isinstance(msg, StartAcquisition):
            return self._start(conn, msg)
        if isinstance(msg, StopAcquisition):
            self._stop(conn)
            return Ack(msg.seq, msg.TYPE)
        if isinstance(msg, TelemetryRequest):
            return self._telemetry()
        if isinstance(msg, (PatternRequest, ModulatorCalibration, PatternUpload)):
            if self.role is not Role.ALICE:
                return Nack(msg.seq, msg.TYPE, ErrorCode.WRONG_ROLE,
                            f"{type(msg).__name__} needs an Alice board; this is {self.role.name}")
            return self._alice(msg)
        return Nack(msg.seq, msg.TYPE, ErrorCode.UNKNOWN_MESSAGE,
                    f"{type(msg).__name__} is not a host request")

    @staticmethod
    def _nack_anomaly(rec: ProtocolAnomaly) -> Nack:
        if isinstance(rec, UnsupportedVersion):
            return Nack(rec.seq, rec.msg_type, ErrorCode.UNSUPPORTED_VERSION,
                        f"protocol version {rec.version} not supported (speaks 1)")
        if isinstance(rec, UnknownMessage):
            return Nack(rec.seq, rec.msg_type, ErrorCode.UNKNOWN_MESSAGE,
                        f"message type 0x{rec.msg_type:02x} unknown")
        reason = rec.reason if isinstance(rec, MalformedPayload) else "malformed"
        return Nack(rec.seq, rec.msg_type, ErrorCode.MALFORMED_PAYLOAD, reason[:200])

    def _parameter(self, msg) -> Message:
        spec = PARAMETERS.get(msg.param)
        if spec is None:
            return Nack(msg.seq, msg.TYPE, ErrorCode.UNKNOWN_PARAMETER,
                        f"parameter id 0x{int(msg.param):04x} unknown")
        if isinstance(msg, SetParameter):
            if spec.param in READ_ONLY:
                return Nack(msg.seq, msg.TYPE, ErrorCode.READ_ONLY_PARAMETER,
                            f"{spec.param.name} is read-only")
            problem = spec.problem(msg.value)
            if problem is not None:
                return Nack(msg.seq, msg.TYPE, ErrorCode.VALUE_OUT_OF_RANGE, problem[:255])
            value = spec.coerce(msg.value)
            with self._lock:
                self.parameters[spec.param] = value
            self._apply_to_controls(spec.param, value)
        return ParameterValue(spec.param, self.parameters[spec.param])

    def _apply_to_controls(self, param: ParamId, value) -> None:
        """Detector settings made through the board reach the physics via LinkControls."""
        if param not in (ParamId.DEAD_TIME_NS, ParamId.DETECTOR_ENABLE_MASK):
            return
        with self.controls.lock:
            for i, det in enumerate(self.controls.detectors):
                if param is ParamId.DEAD_TIME_NS:
                    det.dead_time_ns = float(value)
                else:
                    det.enabled = bool(int(value) >> i & 1)

    def _telemetry(self) -> Telemetry:
        with self.controls.lock:
            readings = tuple(DetectorReading(t.counts, t.bias_v, t.photocurrent_ua,
                                             t.temperature_c) for t in self.controls.telemetry)
        return Telemetry(self.acquiring, readings)

    def _alice(self, msg) -> Message:
        if isinstance(msg, PatternRequest):
            if msg.slots.size > PATTERN_REQUEST_MAX_SLOTS:
                return Nack(msg.seq, msg.TYPE, ErrorCode.VALUE_OUT_OF_RANGE,
                            f"{msg.slots.size} slots requested; at most "
                            f"{PATTERN_REQUEST_MAX_SLOTS} per request")
            if self.link is None:
                return Nack(msg.seq, msg.TYPE, ErrorCode.PATTERN_UNAVAILABLE,
                            "no link simulator behind this board")
            return PatternReply(msg.request_id, self.link.alice_pattern(msg.slots))
        if isinstance(msg, ModulatorCalibration):
            levels = (msg.drive_h_v, msg.drive_v_v, msg.drive_d_v, msg.drive_a_v)
            for state, level in zip("HVDA", levels):
                if not (math.isfinite(level)
                        and MODULATOR_DRIVE_MIN_V <= level <= MODULATOR_DRIVE_MAX_V):
                    return Nack(msg.seq, msg.TYPE, ErrorCode.VALUE_OUT_OF_RANGE,
                                f"drive level for {state} = {level!r} V outside "
                                f"[{MODULATOR_DRIVE_MIN_V:g}, {MODULATOR_DRIVE_MAX_V:g}] V")
            self.calibration = msg
            return Ack(msg.seq, msg.TYPE)
        i = first_invalid_pattern_byte(msg.pattern)
        if i >= 0:
            return Nack(msg.seq, msg.TYPE, ErrorCode.VALUE_OUT_OF_RANGE,
                        f"pattern byte for slot {msg.first_slot + i} is invalid "
                        f"(bits 4-7 must be 0, intensity index 0..2)")
        with self._lock:
            self.uploaded_patterns[msg.first_slot] = msg.pattern.copy()
        return Ack(msg.seq, msg.TYPE)

    def _start(self, conn: _Connection, msg) -> Message:
        with self._lock:
            if self._acquiring_conn is not None:
                return Nack(msg.seq, msg.TYPE, ErrorCode.ALREADY_ACQUIRING,
                            "acquisition already running")
            self._acquiring_conn = conn
        with self.controls.lock:
            self.controls.acquiring = True
        if self.role is Role.BOB:
            conn.stream_after_reply = True     # the Ack goes out before the first batch
        return Ack(msg.seq, msg.TYPE)

    def _stop(self, conn: _Connection) -> None:
        with self._lock:
            if self._acquiring_conn is not conn:
                return
        conn.stop_stream()
        self._end_acquisition(conn)

    def _end_acquisition(self, conn: _Connection) -> None:
        with self._lock:
            if self._acquiring_conn is not conn:
                return
            self._acquiring_conn = None
        with self.controls.lock:
            self.controls.acquiring = False

    # -- Bob's event stream ---------------------------------------------------------------------

    @staticmethod
    def _prepack(replay: list[ReplayBatch]) -> list[tuple[np.ndarray, int, int]]:
        packed = []
        for b in replay:
            words = pack_event_words(0, b.offsets_ps, b.channels)
            packed.append((words, int(words.size), int(b.window_ps)))
        return packed

    def batches(self, stop: threading.Event):
        """Yield (t_start_ps, t_end_ps, timestamps_ps | None, channels | words, n_events)."""
        if self._replay is not None:
            t = 0
            while not stop.is_set():
                for words, n, window in self._replay:
                    yield t, t + window, None, words, n
                    t += window
            return
        yield from self._link_batches(stop)

    def _link_batches(self, stop: threading.Event):
        p = self.link.params
        slot_ps = 1e12 / p.clock_hz * (1.0 + p.clock_drift_ppm * 1e-6)
        margin_ps = 0.5 * slot_ps + 10.0 * float(getattr(p, "jitter_ps", 0.0))

        def boundary(slot: int) -> int:
            return int(round(p.clock_offset_ps + slot * slot_ps - margin_ps))

        t_start = boundary(self.link.next_slot)
        carry_ts = np.empty(0, np.int64)
        carry_ch = np.empty(0, np.uint8)
        while not stop.is_set():
            n_slots = int(self.parameters[ParamId.BATCH_SLOTS])
            chunk = self.link.run_slots(n_slots)
            t_end = boundary(chunk.first_slot + chunk.n_slots)
            ts = np.concatenate((carry_ts, np.asarray(chunk.timestamps_ps, np.int64)))
            ch = np.concatenate((carry_ch, np.asarray(chunk.channels, np.uint8)))
            if ts.size > 1 and np.any(ts[1:] < ts[:-1]):
                order = np.argsort(ts, kind="stable")
                ts, ch = ts[order], ch[order]
            cut = int(np.searchsorted(ts, t_end, side="left"))
            carry_ts, carry_ch = ts[cut:], ch[cut:]
            ts, ch = ts[:cut], ch[:cut]
            early = ts < t_start
            if early.any():
                self.stats.events_clamped += int(early.sum())
                ts = np.maximum(ts, t_start)
            yield t_start, t_end, ts, ch, int(ts.size)
            t_start = t_end


class _Connection:
    """One host connection: its decoder, encoder and send lock, and Bob's stream thread."""

    RECV_BYTES = 1 << 16

    def __init__(self, board: SimBoard, sock: socket.socket):
        self.board = board
        self.sock = sock
        self.encoder = Encoder(flags=FLAG_REPLY)
        self.decoder = Decoder()
        self.send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._serve, daemon=True,
                                        name=f"sim-board-conn-{board.port}")
        self._stream: threading.Thread | None = None
        self._stream_stop = threading.Event()
        self._closed = False
        self.stream_after_reply = False

    def start(self) -> None:
        self._reader.start()

    def join(self) -> None:
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)

    def send(self, msg: Message) -> None:
        with self.send_lock:
            self.sock.sendall(self.encoder.encode(msg))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stream_stop.set()
        hang_up(self.sock)

    def _serve(self) -> None:
        try:
            while True:
                try:
                    data = self.sock.recv(self.RECV_BYTES)
                except OSError:
                    return
                if not data:
                    return
                for msg in self.decoder.feed(data):
                    reply = self.board.handle(self, msg)
                    if reply is not None and not self.board.faults.silent:
                        self.send(reply)
                    if self.stream_after_reply:
                        self.stream_after_reply = False
                        self.start_stream()
        except OSError:
            return
        finally:
            self.close()
            self.board._stop(self)
            self.board._forget(self)

    def start_stream(self) -> None:
        self._stream_stop = threading.Event()
        self._stream = threading.Thread(target=self._stream_loop, args=(self._stream_stop,),
                                        daemon=True, name=f"sim-board-stream-{self.board.port}")
        self._stream.start()

    def stop_stream(self) -> None:
        self._stream_stop.set()
        if self._stream is not None and self._stream is not threading.current_thread():
            self._stream.join(timeout=10.0)
        self._stream = None

    def _stream_loop(self, stop: threading.Event) -> None:
        board = self.board
        stats, faults = board.stats, board.faults
        fixed = EventBatch._FIXED
        started = time.monotonic()
        simulated_s = 0.0
        for batch_seq, (t_start, t_end, ts, payload, n) in enumerate(board.batches(stop)):
            if board.realtime:
                # A batch leaves once its window has passed in (board-clock) real time.
                simulated_s += (t_end - t_start) * 1e-12
                stop.wait(max(0.0, started + simulated_s - time.monotonic()))
            if stop.is_set():
                return
            batch_seq &= 0xFFFFFFFF
            if batch_seq in faults.drop_batches:
                stats.batches_dropped += 1
                stats.events_dropped += n
                continue
            words = payload if ts is None else pack_event_words(t_start, ts, payload)
            parts = (fixed.pack(batch_seq, n, t_start, t_end), words)
            try:
                with self.send_lock:
                    frame = self.encoder.encode_payload(EventBatch.TYPE, parts, flags=0)
                    if faults.garbage_before_batches:
                        self.sock.sendall(faults.garbage_before_batches)
                    if faults.cut_in_batch == batch_seq:
                        self.sock.sendall(frame[:len(frame) // 2])
                        # Acquisition ends with the link, before the host can see it drop.
                        board._end_acquisition(self)
                        self.close()
                        return
                    self.sock.sendall(frame)
            except OSError:
                return
            stats.batches_sent += 1
            stats.events_sent += n
