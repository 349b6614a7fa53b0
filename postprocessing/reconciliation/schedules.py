"""Cascade block-size schedules: how long the blocks of each pass are, chosen by name.

Both parties compute the same schedule from the same (name, frame length, QBER estimate), so
only those three travel in the protocol, never the block sizes themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ReconciliationError

QBER_MIN = 1e-6
QBER_MAX = 0.25
FRAME_BITS_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class CascadeSchedule:
    """A named block-size rule; ``schedule_id`` is the byte that names it on the wire."""

    name: str
    schedule_id: int
    n_passes: int
    reference: str
    # Bob-local default for how many binary-search questions per frame he asks in one round
    # (0 = all open searches at once). Fewer means more round trips but more errors are found
    # through short blocks first, as in the one-block-at-a-time original: at n = 1e4, QBER 1 %,
    # "original" measures f = 1.12 asking 1 per round, 1.15 asking 8, 1.16 asking all.
    default_max_questions: int = 0

    def block_sizes(self, n_bits: int, qber: float) -> np.ndarray:
        """Block length of every pass (int64, each in [1, n_bits]); the last block may be shorter."""
        check_frame(n_bits, qber)
        if self.name == "original":
            # Brassard & Salvail 1993: k1 ~ 0.73/QBER, doubling each pass, 4 passes.
            k1 = math.ceil(0.73 / qber)
            sizes = [k1 << i for i in range(self.n_passes)]
        elif self.name == "yan":
            # Yan et al. 2008: k1 = 0.8/QBER, k2 = 5 k1, then half the frame; 10 passes.
            k1 = math.ceil(0.8 / qber)
            sizes = [k1, 5 * k1] + [math.ceil(n_bits / 2)] * (self.n_passes - 2)
        else:  # pragma: no cover - SCHEDULES holds only the names handled above
            raise ReconciliationError(f"schedule {self.name!r} has no block-size rule")
        return np.array([min(max(k, 1), n_bits) for k in sizes], dtype=np.int64)


SCHEDULES: dict[str, CascadeSchedule] = {
    "original": CascadeSchedule("original", 1, 4, "Brassard & Salvail 1993",
                                default_max_questions=8),
    "yan": CascadeSchedule("yan", 2, 10, "Yan et al. 2008", default_max_questions=0),
}
SCHEDULES_BY_ID = {s.schedule_id: s for s in SCHEDULES.values()}


def get_schedule(name: str) -> CascadeSchedule:
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ReconciliationError(
            f"unknown Cascade schedule {name!r}; accepted: {sorted(SCHEDULES)}") from None


def check_max_questions(max_questions: int | None, schedule: CascadeSchedule) -> int:
    if max_questions is None:
        return schedule.default_max_questions
    if not isinstance(max_questions, (int, np.integer)) or not 0 <= max_questions <= 1 << 30:
        raise ReconciliationError(f"max_questions {max_questions!r} outside [0, {1 << 30}] "
                                  "(0 = no limit)")
    return int(max_questions)


def check_frame(n_bits: int, qber: float) -> None:
    if not isinstance(n_bits, (int, np.integer)) or not 1 <= n_bits <= FRAME_BITS_MAX:
        raise ReconciliationError(f"frame length {n_bits!r} bits outside [1, {FRAME_BITS_MAX}]")
    if not (isinstance(qber, (float, int, np.floating)) and QBER_MIN <= qber <= QBER_MAX):
        raise ReconciliationError(f"QBER estimate {qber!r} outside [{QBER_MIN}, {QBER_MAX}]")


def block_offsets(n_bits: int, sizes: np.ndarray) -> np.ndarray:
    """Index of the first block of each pass in a flat per-block array (int64, length passes+1)."""
    counts = -(-n_bits // sizes)  # ceil division
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
