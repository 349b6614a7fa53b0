"""Driver for the QKD timing board (QKD-TB1 and its simulated twin) over firmware_protocol.

The protocol is specified in ``firmware_protocol/SPEC.md``; this module only owns the I/O: one
request at a time, replies matched by sequence number (Ack/Nack) or by type in order, and Bob's
unsolicited EventBatch frames queued as they arrive (also while a request waits for its reply).

Lost batches: batch numbers count up from 0 at every start. When one or more are missing, the
batch stream carries a ``BatchGap`` record (the board-clock window that was lost) ahead of the
next batch, so the link engine can discard the slots of that window on both sides;
``read_events`` turns it into a ``BatchesLost`` exception, after which reading continues with the
batch that followed the gap.

Pattern replies are key material (Alice's bits and bases): the transport is opened with traffic
logging off, and no pattern byte ever appears in a log or an error message.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from drivers.base import Driver
from drivers.errors import (DeviceDisconnected, DeviceError, DeviceProtocolError,
                            DeviceReportedError, DeviceTimeout, SettingOutOfRange)
from drivers.registry import register
from firmware_protocol import (PARAMETERS, Ack, Capability, Decoder, Encoder, ErrorCode,
                               EventBatch, GetParameter, Heartbeat, HeartbeatReply, IdentifyReply,
                               IdentifyRequest, Message, Nack, ParameterValue, ParamId,
                               PatternReply, PatternRequest, ProtocolAnomaly, Role, SetParameter,
                               StartAcquisition, StopAcquisition, Telemetry, TelemetryRequest,
                               UnknownMessage)
from firmware_protocol.messages import PATTERN_REQUEST_MAX_SLOTS


@dataclass(frozen=True)
class BoardIdentity:
    role: Role
    capabilities: Capability
    model: str
    firmware_version: str
    serial: str


@dataclass(frozen=True)
class BatchGap:
    """Batches ``first_seq .. first_seq + n_missing - 1`` never arrived.

    Their events are lost for the board-clock window [t_start_ps, t_end_ps); ``t_start_ps`` is
    None when the gap starts at acquisition start (the first window's start is not known).
    """

    first_seq: int
    n_missing: int
    t_start_ps: int | None
    t_end_ps: int


class BatchesLost(DeviceError):
    """Raised by ``read_events`` for a BatchGap; ``gap`` holds the lost window."""

    def __init__(self, device: str, gap: BatchGap):
        self.gap = gap
        start = "acquisition start" if gap.t_start_ps is None else f"{gap.t_start_ps} ps"
        super().__init__(device, None, f"{gap.n_missing} event batch(es) from #{gap.first_seq} "
                                        f"lost: board-clock window [{start}, {gap.t_end_ps} ps)")


@dataclass
class StreamStats:
    batches_received: int = 0
    events_received: int = 0
    batches_lost: int = 0
    unknown_frames: int = 0


@register("qkd-board")
class QkdBoard(Driver):
    """Host side of one board (Alice or Bob role, as ``identify()`` reports)."""

    TRANSPORT_DEFAULTS: ClassVar[dict] = {"log_traffic": False}
    READ_BYTES: ClassVar[int] = 1 << 20
    REPLY_TIMEOUT_S: ClassVar[float | None] = None   # None: the transport's timeout
    STOP_TIMEOUT_S: ClassVar[float] = 10.0           # the board flushes its last batches first
    SHOWN_BYTES: ClassVar[int] = 16                  # of unparsable input, in timeout messages

    def __init__(self, transport, *, name: str | None = None):
        super().__init__(transport, name=name)
        self._scratch = bytearray(self.READ_BYTES)
        self._scratch_view = memoryview(self._scratch)
        self._read_into = getattr(transport, "read_into", None)
        self._request_ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self.stream_stats = StreamStats()
        self._batches: deque = deque()
        self._arrived = 0                 # bytes received during the current request
        self._arrived_head = bytearray()  # and the first of them, for the timeout message
        self._reset_session()

    def _reset_session(self) -> None:
        self._encoder = Encoder()
        if hasattr(self, "_decoder"):
            self._decoder.reset()       # statistics stay cumulative over reconnects
        else:
            self._decoder = Decoder()
        self._replies: deque = deque()
        # Batches already received stay queued: they are intact, only the link after them broke.
        self._expected_seq = 0
        self._last_t_end_ps: int | None = None

    def on_reconnect(self) -> None:
        # A half-received frame from the old connection must never be completed by new bytes.
        self._reset_session()

    @property
    def decoder_stats(self):
        """frames_ok / frames_corrupt / bytes_discarded of the receive path."""
        return self._decoder.stats

    # -- receive path -----------------------------------------------------------------------

    def _pump(self, timeout_s: float, command: str | None) -> None:
        """Read what arrived within ``timeout_s`` and sort it into batches and replies."""
        try:
            if self._read_into is not None:
                n = self._read_into(self._scratch_view, timeout_s)
                data = self._scratch_view[:n]
            else:
                data = self.transport.read_some(self.READ_BYTES, timeout_s)
        except DeviceTimeout as exc:
            raise DeviceTimeout(self.name, command, str(exc).split(": ", 1)[-1]) from exc
        except DeviceDisconnected:
            self._decoder.reset()    # drop any half frame: it can never be completed
            raise
        self._arrived += len(data)
        if len(self._arrived_head) < self.SHOWN_BYTES:
            self._arrived_head += data[:self.SHOWN_BYTES - len(self._arrived_head)]
        for item in self._decoder.feed(data):
            if isinstance(item, EventBatch):
                self._accept_batch(item)
            elif isinstance(item, UnknownMessage):
                self.stream_stats.unknown_frames += 1   # newer firmware: ignore, keep going
            else:
                self._replies.append(item)

    def _accept_batch(self, batch: EventBatch) -> None:
        stats = self.stream_stats
        missing = (batch.batch_seq - self._expected_seq) & 0xFFFFFFFF
        if missing and missing < 0x80000000:
            self._batches.append(BatchGap(self._expected_seq, missing, self._last_t_end_ps,
                                          batch.t_start_ps))
            stats.batches_lost += missing
        elif missing:
            raise DeviceProtocolError(self.name, None,
                                      f"event batch #{batch.batch_seq} arrived after "
                                      f"#{(self._expected_seq - 1) & 0xFFFFFFFF} (out of order)")
        self._expected_seq = (batch.batch_seq + 1) & 0xFFFFFFFF
        self._last_t_end_ps = batch.t_end_ps
        stats.batches_received += 1
        stats.events_received += len(batch)
        self._batches.append(batch)

    # -- requests ---------------------------------------------------------------------------

    def _request(self, msg: Message, reply_type: type, timeout_s: float | None = None):
        """Send ``msg``; return its reply. The whole call, reconnect and retry included, takes
        at most ``timeout_s`` (default: REPLY_TIMEOUT_S, else the transport's timeout)."""
        command = type(msg).__name__
        if timeout_s is None:
            timeout_s = self.REPLY_TIMEOUT_S if self.REPLY_TIMEOUT_S is not None \
                else self.default_timeout_s()

        def exchange():
            self._replies.clear()
            frame = self._encoder.encode(msg)
            seq = self._encoder.last_seq
            self.transport.write(frame)
            deadline = time.monotonic() + self.time_left()
            stats = self._decoder.stats
            frames_before = stats.frames_ok + stats.frames_anomalous
            self._arrived = 0
            self._arrived_head.clear()
            polled = False
            while True:
                while self._replies:
                    reply = self._replies.popleft()
                    if isinstance(reply, (Ack, Nack)) and reply.ref_seq != seq:
                        continue      # answers an earlier request that timed out
                    if isinstance(reply, Nack):
                        code = reply.code.name if isinstance(reply.code, ErrorCode) \
                            else str(reply.code)
                        raise DeviceReportedError(self.name, command,
                                                  f"board refused: {code}: {reply.detail}",
                                                  code=int(reply.code))
                    if isinstance(reply, ProtocolAnomaly):
                        raise DeviceProtocolError(self.name, command,
                                                  f"undecodable reply: {reply!r}")
                    if isinstance(reply, reply_type):
                        return reply
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0 and polled:
                        raise DeviceTimeout(self.name, command, "deadline")
                    self._pump(max(0.0, remaining), command)   # at least one poll
                    polled = True
                except DeviceTimeout:
                    frames = stats.frames_ok + stats.frames_anomalous - frames_before
                    raise DeviceTimeout(self.name, command,
                                        f"no {reply_type.__name__} within {timeout_s:g} s"
                                        f"{self._what_arrived(frames, msg)}") from None

        return self.call(exchange, timeout_s)

    def _what_arrived(self, frames: int, msg: Message) -> str:
        """What came instead of the reply: a board answering garbage is not a silent one."""
        if not self._arrived:
            return "; nothing arrived"
        if isinstance(msg, PatternRequest) or frames:
            # the bytes may be pattern (key material) or are frames whose kind is counted
            shown = ""
        else:
            head = bytes(self._arrived_head).hex(" ")
            more = " …" if self._arrived > len(self._arrived_head) else ""
            shown = f", first bytes {head}{more}"
        if frames:
            return (f"; {self._arrived} bytes arrived: {frames} valid frame(s), none of them "
                    f"the reply")
        return (f"; {self._arrived} bytes arrived, none of them a valid frame (decoder: "
                f"{self._decoder.stats.frames_corrupt} corrupt frames so far){shown}")

    def identify(self) -> BoardIdentity:
        r = self._request(IdentifyRequest(), IdentifyReply)
        return BoardIdentity(r.role, r.capabilities, r.model, r.firmware_version, r.serial)

    def heartbeat(self) -> HeartbeatReply:
        token = next(self._tokens) & 0xFFFFFFFF
        reply = self._request(Heartbeat(token), HeartbeatReply)
        if reply.token != token:
            raise DeviceProtocolError(self.name, "Heartbeat",
                                      f"heartbeat echoed token {reply.token}, sent {token}")
        return reply

    def telemetry(self) -> Telemetry:
        return self._request(TelemetryRequest(), Telemetry)

    # -- parameters -------------------------------------------------------------------------

    def set_parameter(self, param: ParamId, value) -> int | float:
        """Set one board parameter; returns the value now in force."""
        param = ParamId(param)
        spec = PARAMETERS[param]
        problem = spec.problem(value)
        if problem is not None:
            raise SettingOutOfRange(self.name, f"SetParameter {param.name}", problem)
        reply = self._request(SetParameter(param, spec.coerce(value)), ParameterValue)
        self._check_param_reply(reply, param)
        self.remember(f"param:{param.name}", self.set_parameter, param, value)
        return reply.value

    def get_parameter(self, param: ParamId) -> int | float:
        param = ParamId(param)
        reply = self._request(GetParameter(param), ParameterValue)
        self._check_param_reply(reply, param)
        return reply.value

    def configure(self, **values) -> dict[str, int | float]:
        """Set several parameters by name (``clock_hz=1e9, sync_period=1000``), all checked first."""
        params = {}
        for key, value in values.items():
            try:
                param = ParamId[key.upper()]
            except KeyError:
                known = ", ".join(p.name.lower() for p in ParamId)
                raise SettingOutOfRange(self.name, "configure",
                                        f"unknown parameter {key!r}; known: {known}") from None
            problem = PARAMETERS[param].problem(value)
            if problem is not None:
                raise SettingOutOfRange(self.name, f"SetParameter {param.name}", problem)
            params[param] = value
        return {p.name.lower(): self.set_parameter(p, v) for p, v in params.items()}

    def _check_param_reply(self, reply: ParameterValue, param: ParamId) -> None:
        if reply.param != param:
            raise DeviceProtocolError(self.name, param.name,
                                      f"reply names parameter {reply.param!r}")

    # -- acquisition (Bob) ------------------------------------------------------------------

    def start_acquisition(self) -> None:
        self._batches.clear()
        self._expected_seq = 0
        self._last_t_end_ps = None
        self._request(StartAcquisition(), Ack)

    def stop_acquisition(self) -> None:
        """Stop; the board sends its last batches before the Ack, so they are all queued after."""
        self._request(StopAcquisition(), Ack,
                      timeout_s=max(self.REPLY_TIMEOUT_S or self.default_timeout_s(),
                                    self.STOP_TIMEOUT_S))

    def read_batch(self, timeout_s: float | None = None) -> EventBatch | BatchGap:
        """The next batch (or gap record) in stream order; DeviceTimeout if none arrives."""
        if timeout_s is None:
            timeout_s = self.REPLY_TIMEOUT_S or self.default_timeout_s()
        deadline = time.monotonic() + timeout_s
        while not self._batches:
            # At least one read, even with timeout 0 (poll); a read that times out raises.
            self._pump(max(0.0, deadline - time.monotonic()), "read_batch")
        return self._batches.popleft()

    def read_events(self, timeout_s: float | None = None) -> EventBatch:
        """The next batch: ``timestamps_ps`` (int64) and ``channels`` (uint8) with its window.

        Raises BatchesLost for a gap; the following call returns the batch after the gap.
        """
        item = self.read_batch(timeout_s)
        if isinstance(item, BatchGap):
            raise BatchesLost(self.name, item)
        return item

    def iter_batches(self, timeout_s: float | None = None) -> Iterator[EventBatch | BatchGap]:
        """Batches and gaps as they arrive, until none arrives within ``timeout_s``."""
        while True:
            try:
                yield self.read_batch(timeout_s)
            except DeviceTimeout:
                return

    def queued_batches(self) -> list[EventBatch | BatchGap]:
        """Take everything already received (e.g. after ``stop_acquisition``) without reading."""
        items = list(self._batches)
        self._batches.clear()
        return items

    # -- pattern memory (Alice) -------------------------------------------------------------

    def request_pattern(self, slots) -> np.ndarray:
        """Alice's pattern byte (uint8, layout in sim_backend.pattern) of each slot, in order."""
        slots = np.ascontiguousarray(slots, dtype=np.uint64)
        out = np.empty(slots.size, dtype=np.uint8)
        for lo in range(0, slots.size, PATTERN_REQUEST_MAX_SLOTS):
            part = slots[lo:lo + PATTERN_REQUEST_MAX_SLOTS]
            request_id = next(self._request_ids) & 0xFFFFFFFF
            reply = self._request(PatternRequest(request_id, part), PatternReply)
            if reply.request_id != request_id or reply.pattern.size != part.size:
                raise DeviceProtocolError(self.name, "PatternRequest",
                                          f"reply #{reply.request_id} with {reply.pattern.size} "
                                          f"bytes to request #{request_id} for {part.size} slots")
            out[lo:lo + part.size] = reply.pattern
        return out
