"""Per-link figures and alarms: what ``qkd-node status`` shows. Never key bits."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field

REJECTED_ALARM_COUNT = 5        # this many rejected peer messages ...
REJECTED_ALARM_WINDOW_S = 60.0  # ... within this window raise the authentication alarm
QBER_REASONS = ("qber",)        # abort reasons containing these words count as QBER aborts


@dataclass
class LinkFigures:
    link_id: str
    role: str
    protocol: str
    state: str = "starting"
    blocks_started: int = 0
    blocks_ok: int = 0
    blocks_aborted: int = 0
    abort_reasons: Counter = field(default_factory=Counter)
    in_flight: int = 0
    in_flight_parts: dict = field(default_factory=dict)   # what in_flight counts, by kind
    in_flight_peak: int = 0
    last_qber: float = math.nan
    secret_bits: int = 0
    sifted_bits: int = 0            # sifted bits of every block whose roles finished here
    keys_stored: int = 0
    auth_bits_used: int = 0
    auth_bits_left: int | None = None
    store_bits: int = 0
    store_capacity_bits: int = 0
    rejected_messages: int = 0
    alarms: dict = field(default_factory=dict)
    note: str = ""                  # a standing remark for the operator (B92: why no key)
    started_at: float = field(default_factory=time.monotonic)
    _qber_aborts_in_row: int = 0
    _rejected_times: deque = field(default_factory=lambda: deque(maxlen=REJECTED_ALARM_COUNT))

    def block_ok(self, qber: float, secret_bits: int, keys: int, auth_bits: int) -> None:
        self.blocks_ok += 1
        self.last_qber = qber
        self.secret_bits += secret_bits
        self.keys_stored += keys
        self.auth_bits_used += auth_bits
        self._qber_aborts_in_row = 0
        self.alarms.pop("qber", None)

    def block_aborted(self, reasons: list[str], qber: float, qber_alarm_blocks: int) -> None:
        self.blocks_aborted += 1
        for r in reasons or ["unknown"]:
            self.abort_reasons[r] += 1
        if qber == qber:
            self.last_qber = qber
        if any(w in r for r in reasons for w in QBER_REASONS):
            self._qber_aborts_in_row += 1
            if self._qber_aborts_in_row >= qber_alarm_blocks:
                self.alarms["qber"] = (f"{self._qber_aborts_in_row} blocks in a row aborted on "
                                       f"QBER (last {self.last_qber:.2%}): possible eavesdropping")

    def message_rejected(self, reason: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.rejected_messages += 1
        self._rejected_times.append(now)
        if (len(self._rejected_times) == REJECTED_ALARM_COUNT
                and now - self._rejected_times[0] <= REJECTED_ALARM_WINDOW_S):
            self.alarms["authentication"] = (f"{REJECTED_ALARM_COUNT} peer messages rejected "
                                             f"within {REJECTED_ALARM_WINDOW_S:g} s "
                                             f"(last: {reason})")

    def secret_bits_per_s(self, now: float | None = None) -> float:
        elapsed = (time.monotonic() if now is None else now) - self.started_at
        return self.secret_bits / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict:
        fill = (self.store_bits / self.store_capacity_bits if self.store_capacity_bits else 0.0)
        return {
            "link": self.link_id, "role": self.role, "protocol": self.protocol,
            "state": self.state, "blocks_started": self.blocks_started,
            "blocks_ok": self.blocks_ok, "blocks_aborted": self.blocks_aborted,
            "abort_reasons": dict(self.abort_reasons), "in_flight": self.in_flight,
            "in_flight_peak": self.in_flight_peak,
            "in_flight_parts": dict(self.in_flight_parts),
            "qber": None if self.last_qber != self.last_qber else self.last_qber,
            "secret_bits": self.secret_bits, "sifted_bits": self.sifted_bits,
            "secret_bits_per_s": self.secret_bits_per_s(),
            "keys_stored": self.keys_stored, "auth_bits_used": self.auth_bits_used,
            "auth_bits_left": self.auth_bits_left, "store_bits": self.store_bits,
            "store_capacity_bits": self.store_capacity_bits, "store_fill": fill,
            "rejected_messages": self.rejected_messages, "alarms": dict(self.alarms),
            "note": self.note,
        }
