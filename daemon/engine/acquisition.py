"""Acquisition: Bob's board stream cut into blocks and mapped to Alice's slots; Alice's board
parameters and pattern lookups.

Bob's board streams continuously; a block is the run of consecutive batches that covers the
policy's ``block_pulses`` slots. A lost batch (``BatchesLost``) spoils the block being
collected: its events are dropped and collection starts afresh after the gap, so no block has a
hole Alice could not see. Slot alignment is ``postprocessing.alignment`` exactly as
``distill_events`` does it (``fit_clock`` on the block's syncs, then ``assign_slots`` with a
gate of ``gate_sigma`` sync residuals). The sync search window comes from the previous block's
clock fit, or for the first block from the board clock read as slots, widened by
``FIRST_SEARCH_SYNCS`` either side. These calls block: the engine runs them in its I/O thread.
"""

from __future__ import annotations

import threading

import numpy as np

from daemon.engine.ports import AcquiredBlock, BoardParameters
from drivers.board.qkd_board import BatchesLost
from firmware_protocol import ParamId
from firmware_protocol.sync import sync_on_bits
from postprocessing.alignment import AlignmentError, ClockFit, assign_slots, fit_clock

FIRST_SEARCH_SYNCS = 1 << 16
NEXT_SEARCH_SYNCS = 1 << 10
READ_TIMEOUT_S = 30.0


class AcquisitionError(RuntimeError):
    """A block could not be collected or aligned; ``reason`` is a short code for the figures."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def read_board_parameters(board) -> BoardParameters:
    """Alice's public board parameters, which her node announces to Bob's."""
    get = board.get_parameter
    p_sig, p_d1 = float(get(ParamId.P_SIGNAL)), float(get(ParamId.P_DECOY1))
    return BoardParameters(
        clock_hz=float(get(ParamId.CLOCK_HZ)), sync_period=int(get(ParamId.SYNC_PERIOD)),
        sync_key=int(get(ParamId.SYNC_KEY)),
        intensities=(float(get(ParamId.MU)), float(get(ParamId.NU1)), float(get(ParamId.NU2))),
        probabilities=(p_sig, p_d1, max(0.0, 1.0 - p_sig - p_d1)),
        p_basis_x=float(get(ParamId.P_BASIS_X)))


class PatternSource:
    """Alice's ``pattern_of(slots)`` for her block roles: one board request at a time."""

    def __init__(self, board):
        self._board = board
        self._lock = threading.Lock()

    def __call__(self, slots: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._board.request_pattern(slots)


class BobAcquisition:
    """Cuts Bob's continuous event stream into aligned blocks (``next_block`` blocks)."""

    def __init__(self, board, params: BoardParameters, block_pulses: int, *,
                 gate_sigma: float = 3.0):
        self.board = board
        self.params = params
        self.block_pulses = int(block_pulses)
        self.gate_sigma = gate_sigma
        self.slot_ps = 1e12 / params.clock_hz
        self._fit: ClockFit | None = None
        self._running = False
        self.events_lost_blocks = 0

    def start(self) -> None:
        if not self._running:
            self.board.start_acquisition()
            self._running = True

    def stop(self) -> None:
        if self._running:
            self._running = False
            try:
                self.board.stop_acquisition()
            finally:
                self.board.queued_batches()   # events past the last block belong to none

    def next_block(self) -> AcquiredBlock:
        """Collect and align one block; AcquisitionError when it is spoiled."""
        self.start()
        times, chans = [], []
        covered_ps = 0.0
        need_ps = self.block_pulses * self.slot_ps
        while covered_ps < need_ps:
            try:
                batch = self.board.read_events(timeout_s=READ_TIMEOUT_S)
            except BatchesLost as exc:
                self.events_lost_blocks += 1
                raise AcquisitionError("events_lost", str(exc)) from None
            times.append(batch.timestamps_ps)
            chans.append(batch.channels)
            covered_ps += batch.t_end_ps - batch.t_start_ps
        t = np.concatenate(times) if times else np.zeros(0, np.int64)
        c = np.concatenate(chans) if chans else np.zeros(0, np.uint8)
        return self.align(t, c, int(covered_ps / self.slot_ps))

    def align(self, t: np.ndarray, c: np.ndarray, n_pulses: int) -> AcquiredBlock:
        if t.size == 0:
            raise AcquisitionError("no_events", "the block holds no detection events")
        sync_period = self.params.sync_period
        span = n_pulses // sync_period + 2
        if self._fit is None:
            guess, margin = int(t[0] / self.slot_ps) // sync_period, FIRST_SEARCH_SYNCS
        else:
            f = self._fit
            guess = int(f.ref_slot + (int(t[0]) - f.ref_time_ps) / f.period_ps) // sync_period
            margin = NEXT_SEARCH_SYNCS
        first = max(0, guess - margin)
        bits = sync_on_bits(self.params.sync_key, first, span + 2 * margin)
        try:
            fit = fit_clock(t, c, nominal_period_ps=self.slot_ps, sync_period=sync_period,
                            sync_on_bits=bits, first_sync_index=first)
        except AlignmentError as exc:
            self._fit = None      # search widely again next time
            raise AcquisitionError("alignment_failed", str(exc)) from None
        self._fit = fit
        gate = min(max(self.gate_sigma * fit.residual_rms_ps, 1.0), fit.period_ps / 2)
        slots, valid = assign_slots(t, fit, gate)
        first_slot = int(slots[valid].min()) if valid.any() else int(slots.min())
        return AcquiredBlock(slots=slots, channels=c, valid=valid, n_pulses=n_pulses,
                             first_slot=first_slot)
