"""Alice's and Bob's block roles: one sans-I/O object per node per block.

A role takes the peer's message ``(msg_type, payload_bytes)`` and returns its own next messages;
it ends in a ``BlockOutcome`` (key, stats) or an abort (reasons), and an abort at either end
sends ABORT so that both ends stop. The roles own the block's I/O-free logic only: the daemon's
link engine and the in-process ``distill`` move the bytes. Every step drives the existing step
codecs and roles (sifting, estimation, Cascade, verification, Toeplitz PA); every decision comes
from ``decisions``. Steps and message types: module ``postprocessing.block`` and
docs/block-protocol.md.

Wiping: every array that holds or determines key bits (Bob's detections incl. his B92 basis,
Alice's pattern bytes for the announced slots, sifted, sampled, kept, corrected bits, the PA
inputs) is registered when made and filled with zeros when the role finishes, on success and on
every abort. ``key_material()`` lists them so tests can check. The final key is the caller's to
store and wipe.

A role never raises for what the peer sends: an undecodable, out-of-order or inconsistent
message aborts the block (reason ``protocol_error``, ABORT to the peer).
"""

from __future__ import annotations

import abc

from dataclasses import dataclass
from typing import Callable

import numpy as np

from postprocessing.reconciliation.leakage import (ERROR_PATTERN_PUBLIC, CascadeTraffic,
                                                   leak_ec_bits)
from postprocessing import estimation as est
from postprocessing import sifting
from postprocessing.sifting import lt3 as sifting_lt3
from postprocessing.amplification import toeplitz_hash
from postprocessing.block import decisions
from postprocessing.block.messages import Abort, MessageType, PaSeed
from postprocessing.block.params import BlockParams
from postprocessing.block.stats import BlockStats
from postprocessing.randomness import ProtocolRandom
from postprocessing.reconciliation.inprocess import efficiency_of
from postprocessing.reconciliation.messages import CascadeSetup, ParityReply, ParityRequest
from postprocessing.reconciliation.roles import CascadeAlice, CascadeBob
from postprocessing.reconciliation.schedules import get_schedule
from postprocessing.verification import VerifyMessage, alice_verification_message, bob_check

M = MessageType
_R = est.AbortReason


class BlockRoleError(ValueError):
    """A block role was built with arguments it cannot work with."""


@dataclass(frozen=True, eq=False)
class BlockOutcome:
    """How a block ended at one end. key: uint8 0/1 (empty when aborted), wiped by the caller
    after storing it."""

    key: np.ndarray
    stats: BlockStats
    aborted: bool
    reasons: list


def charged_leak(alice_parity_bits: int, tag_bits: int) -> int:
    """leak_EC charged to the bound, by Tupkary & Lutkenhaus 2023's accounting for Cascade:
    Bob's messages depend on his bits only through the error parities of the ranges compared,
    so the transcript is Alice's parities plus a function of the error pattern; both node
    bounds (Tomamichel 2012, Lim 2014) rest on a phase-error estimate that holds with the error
    pattern public, so Alice's parities and the tag are charged (docs/security.md)."""
    traffic = CascadeTraffic(int(alice_parity_bits), 0, int(tag_bits))
    return leak_ec_bits(traffic, accounting=ERROR_PATTERN_PUBLIC)


def new_pa_seed(rng: ProtocolRandom, n_bits: int, key_length: int) -> np.ndarray:
    """A fresh Toeplitz seed (n + l - 1 bits) for one block, drawn after the key is fixed."""
    return rng.bits(n_bits + key_length - 1)


def tags_match(message: VerifyMessage, bits: np.ndarray, eps_cor: float) -> bool:
    """Alice's verification check of Bob's tags against her key."""
    return bob_check(message, bits, eps_cor)


def _wipe(a, deep: bool = True) -> None:
    """Zero ``a`` and, when ``deep``, the arrays it is a view of (made by this role)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            a.fill(0)
        a = a.base if deep else None


def _split_frames(bits: np.ndarray, frame_bits: int | None, schedule: str, qber: float
                  ) -> list[np.ndarray]:
    """Cascade frames (views of ``bits``): round(n / frame_bits) frames whose lengths differ by
    at most one bit, the longer ones first (so each length is a run of consecutive frames, and
    its part of every reconciliation message one slice). The reconciliation roles give every
    frame of a batch the pass count of its first length group, so if the two lengths get
    different layouts the key stays one frame. Both ends call this with the same
    (schedule, qber): Bob's estimate, sent in CascadeSetup."""
    n = bits.size
    if frame_bits is None or n <= frame_bits:
        return [bits]
    n_frames = max(1, round(n / frame_bits))
    short, longer = divmod(n, n_frames)
    cuts = np.concatenate(([0], np.cumsum([short + 1] * longer + [short] * (n_frames - longer))))
    lengths = set(np.diff(cuts).tolist())
    sched = get_schedule(schedule)
    if len({len(sched.layout(int(m), qber)[0]) for m in lengths}) > 1:
        return [bits]
    return [bits[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


class _BlockRole(abc.ABC):
    side = ""

    def __init__(self, params: BlockParams, rng: ProtocolRandom, pa_hash=None):
        if not isinstance(params, BlockParams):
            raise BlockRoleError(f"params must be a BlockParams, got {type(params).__name__}")
        if not isinstance(rng, ProtocolRandom):
            raise BlockRoleError(f"rng must be a ProtocolRandom, got {type(rng).__name__}")
        self.params = params
        self.rng = rng
        self._pa_hash = pa_hash or toeplitz_hash
        self.stats = BlockStats(protocol=params.protocol, eps_sec=float(params.eps_sec),
                                eps_cor=float(params.eps_cor))
        self.outcome: BlockOutcome | None = None
        self.state = "start"
        self._held: list[tuple[np.ndarray, bool]] = []

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def key_material(self) -> list[np.ndarray]:
        """Every array this role held that carried or determined key bits (zero once done)."""
        return [a for a, _ in self._held]

    def _hold(self, *arrays, deep: bool = True):
        """Register arrays for wiping; ``deep=False`` for arrays a caller handed in, whose
        base (e.g. a whole pattern window) is not this role's to touch."""
        self._held.extend((a, deep) for a in arrays if isinstance(a, np.ndarray))
        return arrays[0] if len(arrays) == 1 else arrays

    def _wipe_all(self) -> None:
        for a, deep in self._held:
            _wipe(a, deep)

    def _finish(self, key: np.ndarray) -> None:
        self._wipe_all()
        self.state = "done"
        self.outcome = BlockOutcome(key, self.stats, False, [])

    def _abort(self, decision: est.AbortDecision, *, notify: bool = True) -> list:
        self.stats.record_abort(decision)
        self._wipe_all()
        self._drop_cascade()
        self.state = "aborted"
        self.outcome = BlockOutcome(np.zeros(0, np.uint8), self.stats, True,
                                    list(self.stats.abort_reasons))
        if not notify:
            return []
        text = "; ".join(decision.details)
        return [(int(M.ABORT), Abort(decision.reasons, text).to_bytes())]

    def _drop_cascade(self) -> None:
        self._cascade = None  # its pooled state is wiped when released

    def _peer_abort(self, payload: bytes) -> list:
        try:
            msg = Abort.from_bytes(payload)
            reasons = msg.reasons or (_R.PEER_ABORT,)
            text = msg.text
        except Exception as exc:  # noqa: BLE001 - an undecodable abort still stops the block
            reasons, text = (_R.PEER_ABORT,), f"undecodable ABORT from peer ({exc})"
        details = tuple(f"peer: {text}" for _ in reasons)
        return self._abort(est.AbortDecision(tuple(reasons), details), notify=False)

    def receive(self, msg) -> list:
        """The peer's message in, this role's replies out (never raises for peer input)."""
        if self.done:
            return []
        try:
            msg_type, payload = msg
            msg_type = int(msg_type)
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
            payload = bytes(payload)
        except Exception as exc:  # noqa: BLE001
            return self._abort(est.AbortDecision.because(
                _R.PROTOCOL_ERROR, f"malformed peer message: {type(exc).__name__}: {exc}"))
        if msg_type == M.ABORT:
            return self._peer_abort(payload)
        handler = self._handlers().get((self.state, msg_type))
        if handler is None:
            name = M(msg_type).name if msg_type in M._value2member_map_ else str(msg_type)
            return self._abort(est.AbortDecision.because(
                _R.PROTOCOL_ERROR, f"{self.side}: unexpected message {name} in state "
                                   f"{self.state}"))
        try:
            return handler(payload)
        except Exception as exc:  # noqa: BLE001 - any failure on peer input aborts the block
            return self._abort(est.AbortDecision.because(
                _R.PROTOCOL_ERROR, f"{self.side} in state {self.state}: "
                                   f"{type(exc).__name__}: {exc}"))

    @abc.abstractmethod
    def _handlers(self) -> dict:
        """msg_type -> bound method for the messages this role accepts in its current state."""

    # shared estimation bookkeeping
    def _record_sampled(self, e: decisions.SampledEstimate) -> None:
        st = self.stats
        st.sample_bits = e.k
        st.key_input_bits = e.n_key
        st.qber_estimate = e.qber
        st.qber_by_basis = list(e.qber_by_basis)
        st.sample_by_basis = list(e.k_by_basis)
        st.qber_upper_by_basis = list(e.upper_by_basis)
        st.qber_upper = e.qber_upper

    def _record_decoy(self, counts, verdict: est.ClassVerdict, n_key: int, n_test: int) -> None:
        st = self.stats
        st.sample_bits = n_test
        st.key_input_bits = n_key
        st.decoy_counts = counts.tolist()
        st.decoy_test_errors = list(verdict.errors)
        st.qber_estimate = verdict.total_errors / n_test
        st.qber_upper = est.estimate_qber_upper(verdict.total_errors, n_test, n_key,
                                                self.params.eps_sec)
        # Per basis [Z, X]: the disclosed test basis now, the key basis once Bob has corrected.
        st.qber_by_basis = [float("nan")] * est.N_BASES
        st.sample_by_basis = [0] * est.N_BASES
        st.qber_by_basis[1 - sifting.KEY_BASIS] = st.qber_estimate
        st.sample_by_basis[1 - sifting.KEY_BASIS] = int(n_test)

    def _record_lt3(self, rows: sifting_lt3.Lt3Rows) -> float:
        """Record the public LT3 table; returns the X0 error rate (Cascade's estimate)."""
        st = self.stats
        self._lt3_counts = rows.counts
        st.lt3_counts = rows.counts.to_dict()
        st.sifted_bits = st.key_input_bits = int(rows.key_bits.size)
        st.sample_bits = int(rows.x0_clicks)
        rate = decisions.lt3_x0_error_rate(rows.x0_errors, rows.x0_clicks)
        st.qber_estimate = rate
        return rate

    def _key_length(self, leak: int):
        if self.params.protocol == "lt3":
            return decisions.lt3_key_length(self.params, self._lt3_counts, leak)
        if self.params.decoy:
            return decisions.decoy_key_length(self.params, self._counts, self._verdict.errors,
                                              leak)
        return decisions.sampled_key_length(self.params, self._estimate, leak)

    def _record_bound(self, bound) -> None:
        self.stats.key_length = bound.key_length
        self.stats.bound = bound.bound
        self.stats.bound_terms = dict(bound.terms)


class BobBlock(_BlockRole):
    """Bob's end: he holds the detection events, opens the block and drives Cascade."""

    side = "Bob"

    def __init__(self, params: BlockParams, slots, channels, valid, n_pulses: int,
                 rng: ProtocolRandom, *, pa_hash=None):
        super().__init__(params, rng, pa_hash)
        if isinstance(n_pulses, bool) or not isinstance(n_pulses, (int, np.integer)) \
                or n_pulses < 1:
            raise BlockRoleError(f"n_pulses={n_pulses!r} must be an integer >= 1")
        self._events = (slots, channels, valid)
        self.stats.n_pulses = int(n_pulses)
        self.stats.n_events = int(np.asarray(slots).size)
        self._cascade = None

    def _handlers(self) -> dict:
        return {("await_answer", M.SIFT_ANSWER): self._on_answer,
                ("await_verdict", M.EST_VERDICT): self._on_verdict,
                ("reconciling", M.PARITY_REPLY): self._on_reply,
                ("await_pa", M.PA_SEED): self._on_pa_seed}

    def start(self) -> list:
        """Bob opens: squash and announce his detections (SIFT_ANNOUNCE)."""
        if self.state != "start":
            return []
        slots, channels, valid = self._events
        self._events = None
        try:
            with self.stats.timed("sifting"):
                args = (np.asarray(slots, dtype=np.int64), np.asarray(channels, dtype=np.uint8),
                        self.rng)
                kw = dict(valid=valid, holdoff_slots=self.params.holdoff_slots)
                if self.params.protocol == "lt3":
                    ann, det = sifting_lt3.bob_announce_lt3(*args, self.stats.n_pulses, **kw)
                else:
                    announce = (sifting.bob_announce_bb84 if self.params.protocol == "bb84"
                                else sifting.bob_announce_b92)
                    ann, det = announce(*args, **kw)
                self._hold(det.bits, det.basis)
                self._detections = det
                payload = ann.to_bytes()
        except Exception as exc:  # noqa: BLE001 - bad local input stops the block, typed reason
            return self._abort(est.AbortDecision.because(
                _R.PROTOCOL_ERROR, f"Bob could not announce: {type(exc).__name__}: {exc}"))
        self.state = "await_answer"
        return [(int(M.SIFT_ANNOUNCE), payload)]

    def _multi_click(self, det) -> None:
        st = self.stats
        st.sift_counts = det.counts.to_dict()
        c = st.sift_counts
        st.multi_click_fraction = ((c["n_double_same_basis"] + c["n_double_cross_basis"])
                                   / max(1, c["n_detected_slots"]))

    def _on_answer_lt3(self, payload: bytes) -> list:
        st = self.stats
        p = self.params
        with st.timed("sifting"):
            answer = sifting_lt3.Lt3Answer.from_bytes(payload)
            det = self._detections
            rows = sifting_lt3.bob_apply_answer_lt3(answer, det, st.n_pulses)
            self._hold(rows.key_bits)
            _wipe(det.bits), _wipe(det.basis)
            self._detections = None
        self._multi_click(det)
        with st.timed("estimation"):
            rate = self._record_lt3(rows)
            decision = decisions.lt3_decision(p, rows.counts, rate,
                                              multi_click_fraction=st.multi_click_fraction)
        if decision.abort:
            return self._abort(decision)
        self._kept = rows.key_bits
        return self._start_cascade(rate if rate == rate else p.qber_tol)

    def _on_answer(self, payload: bytes) -> list:
        if self.params.protocol == "lt3":
            return self._on_answer_lt3(payload)
        st = self.stats
        with st.timed("sifting"):
            answer = sifting.SiftAnswer.from_bytes(payload)
            det = self._detections
            sifted = sifting.bob_apply_answer(answer, det)
            self._hold(sifted.bits, sifted.basis)
            _wipe(det.bits), _wipe(det.basis)
            self._detections = None
        st.sift_counts = det.counts.to_dict()
        st.sifted_bits = len(sifted)
        c = st.sift_counts
        st.multi_click_fraction = ((c["n_double_same_basis"] + c["n_double_cross_basis"])
                                   / max(1, c["n_detected_slots"]))
        if self.params.protocol == "b92":
            st.conclusive_per_pulse = st.sifted_bits / st.n_pulses
        with st.timed("estimation"):
            if self.params.decoy:
                counts, n_key, n_test = decisions.decoy_counts(sifted.basis, sifted.intensity)
                st.decoy_counts = counts.tolist()
                if n_test < 1 or n_key < 1:
                    return self._abort(est.AbortDecision.because(
                        _R.TOO_FEW_SIFTED_BITS, f"{n_key} key-basis and {n_test} test-basis "
                                                f"bits; both must be >= 1"))
                self._counts = counts
                positions = np.flatnonzero(sifted.basis == 1 - sifting.KEY_BASIS)
                ann, kept = est.announce_positions(sifted.bits, positions)
            else:
                n = st.sifted_bits
                k = decisions.sample_size(self.params, n)
                if n < 2 or k >= n:
                    return self._abort(est.AbortDecision.because(
                        _R.TOO_FEW_SIFTED_BITS, f"{n} sifted bits, a test sample of {k} needs "
                                                f"more"))
                ann, kept = est.announce_sample(sifted.bits, k, self.rng)
                kept_basis = est.remove_positions(sifted.basis, ann.positions)
                self._n_key_by_basis = np.bincount(kept_basis, minlength=est.N_BASES)
            self._hold(ann.bits, kept)
            self._kept = kept
            payload = ann.to_bytes()
        self.state = "await_verdict"
        return [(int(M.EST_SAMPLE), payload)]

    def _on_verdict(self, payload: bytes) -> list:
        st = self.stats
        p = self.params
        with st.timed("estimation"):
            verdict = est.ClassVerdict.from_bytes(payload)
            self._verdict = verdict
            n_classes = est.N_INTENSITIES if p.decoy else est.N_BASES
            if len(verdict.counts) != n_classes or verdict.k != st.sifted_bits - self._kept.size:
                raise ValueError(f"verdict covers {len(verdict.counts)} classes and {verdict.k} "
                                 f"bits, expected {n_classes} and "
                                 f"{st.sifted_bits - self._kept.size}")
            if p.decoy:
                n_key = self._kept.size
                self._record_decoy(self._counts, verdict, n_key, verdict.k)
                decision = decisions.decoy_decision(p, st.qber_upper)
            else:
                e = decisions.sampled_estimate(verdict, self._n_key_by_basis, p.eps_sec)
                self._estimate = e
                self._record_sampled(e)
                yield_check = None
                if p.protocol == "b92":
                    yield_check = est.check_conclusive_yield(
                        st.sifted_bits, st.n_pulses, p.expected_conclusive_per_pulse,
                        eps=p.yield_eps, rel_tolerance=p.yield_rel_tolerance)
                decision = decisions.sampled_decision(
                    p, e, yield_check=yield_check, multi_click_fraction=st.multi_click_fraction)
                if not decisions.protocol_may_yield_key(p.protocol):
                    bound = decisions.sampled_key_length(p, e, 0)
                    self._record_bound(bound)
                    st.bound_terms.update(conclusive_per_pulse=st.conclusive_per_pulse,
                                          multi_click_fraction=st.multi_click_fraction)
        if decision.abort:
            return self._abort(decision)
        return self._start_cascade(st.qber_estimate)

    def _start_cascade(self, qber_estimate: float) -> list:
        st = self.stats
        p = self.params
        with st.timed("reconciliation"):
            q = decisions.cascade_qber(qber_estimate)
            frames = _split_frames(self._kept, p.frame_bits, p.schedule, q)
            self._n_frames = len(frames)
            self._cascade = CascadeBob(frames, q, p.schedule, seed=self.rng.uint64())
            out = [(int(M.CASCADE_SETUP), self._cascade.setup().to_bytes())]
            request = self._cascade.start()
        self.state = "reconciling"
        if request is None:
            return out + self._after_cascade()
        self._rounds = 1
        return out + [(int(M.PARITY_REQUEST), request.to_bytes())]

    def _on_reply(self, payload: bytes) -> list:
        with self.stats.timed("reconciliation"):
            request = self._cascade.handle_reply(ParityReply.from_bytes(payload))
        if request is not None:
            self._rounds += 1
            return [(int(M.PARITY_REQUEST), request.to_bytes())]
        return self._after_cascade()

    def _after_cascade(self) -> list:
        st = self.stats
        cb = self._cascade
        n_frames = self._n_frames
        with st.timed("reconciliation"):
            parts = [cb.corrected_bits(i) for i in range(n_frames)]
            self._hold(*parts)
            failed = [i for i in range(n_frames) if cb.gave_up(i)]
            disclosed = sum(cb.disclosed_bits(i) for i in range(n_frames))
            flips = sum(cb.corrections(i) for i in range(n_frames))
            corrected = self._hold(np.concatenate(parts))
            for a in parts:
                _wipe(a)
            _wipe(self._kept)
        self._drop_cascade()
        n = corrected.size
        st.cascade_disclosed_bits = int(disclosed)
        st.round_trips = int(getattr(self, "_rounds", 0))
        st.reconcile_efficiency = float(efficiency_of(int(disclosed), n, flips / n))
        if st.decoy_counts and len(st.sample_by_basis) == est.N_BASES and not failed and n:
            # decoy BB84: the key basis' errors, as corrected (``_record_decoy`` set the X)
            st.qber_by_basis[sifting.KEY_BASIS] = flips / n
            st.sample_by_basis[sifting.KEY_BASIS] = int(n)
        if failed:
            return self._abort(est.AbortDecision.because(
                _R.RECONCILIATION_FAILED, f"Cascade gave up on frame(s) {failed[:5]}"))
        with st.timed("verification"):
            msg = alice_verification_message(corrected, self.params.eps_cor, self.rng.bytes)
        self._corrected = corrected
        st.tag_bits = int(msg.tag_bits)
        st.leak_ec = charged_leak(st.cascade_disclosed_bits, st.tag_bits)
        self.state = "await_pa"
        return [(int(M.VERIFY_TAGS), msg.to_bytes())]

    def _on_pa_seed(self, payload: bytes) -> list:
        st = self.stats
        with st.timed("finite_key"):
            bound = self._key_length(st.leak_ec)
        self._record_bound(bound)
        pa = PaSeed.from_bytes(payload)
        if pa.n_bits != self._corrected.size or pa.key_length != bound.key_length:
            raise ValueError(f"PA seed for {pa.n_bits} -> {pa.key_length} bits, Bob's bound "
                             f"gives {self._corrected.size} -> {bound.key_length}")
        with st.timed("amplification"):
            key = self._pa_hash(self._corrected, pa.seed, pa.key_length)
        self._finish(key)
        return []


class AliceBlock(_BlockRole):
    """Alice's end: she answers from her board's pattern and draws the PA seed."""

    side = "Alice"

    def __init__(self, params: BlockParams, pattern_of: Callable[[np.ndarray], np.ndarray],
                 rng: ProtocolRandom, *, pa_hash=None):
        super().__init__(params, rng, pa_hash)
        if not callable(pattern_of):
            raise BlockRoleError("pattern_of must be callable: slots (int64) -> pattern bytes")
        self._pattern_of = pattern_of
        self._cascade = None
        self.state = "await_announce"

    def start(self) -> list:
        """Alice waits for Bob's announcement."""
        return []

    def _handlers(self) -> dict:
        return {("await_announce", M.SIFT_ANNOUNCE): self._on_announce,
                ("await_sample", M.EST_SAMPLE): self._on_sample,
                ("await_setup", M.CASCADE_SETUP): self._on_setup,
                ("reconciling", M.PARITY_REQUEST): self._on_request,
                ("reconciling", M.VERIFY_TAGS): self._on_tags}

    def _on_announce_lt3(self, payload: bytes) -> list:
        st = self.stats
        p = self.params
        with st.timed("sifting"):
            ann = sifting_lt3.Lt3Announcement.from_bytes(payload)
            pattern = np.asarray(self._pattern_of(ann.slots))
            self._hold(pattern, deep=False)
            answer, rows = sifting_lt3.alice_answer_lt3(ann, pattern)
            _wipe(pattern, deep=False)
            self._hold(rows.key_bits)
            payload_out = answer.to_bytes()
        st.n_pulses = int(ann.n_pulses)
        with st.timed("estimation"):
            rate = self._record_lt3(rows)
            decision = decisions.lt3_decision(p, rows.counts, rate)
        out = [(int(M.SIFT_ANSWER), payload_out)]
        if decision.abort:
            return out + self._abort(decision)
        self._kept = rows.key_bits
        self.state = "await_setup"
        return out

    def _on_announce(self, payload: bytes) -> list:
        if self.params.protocol == "lt3":
            return self._on_announce_lt3(payload)
        st = self.stats
        p = self.params
        with st.timed("sifting"):
            ann = sifting.SiftAnnouncement.from_bytes(payload)
            if ann.protocol != p.protocol:
                raise ValueError(f"announcement for {ann.protocol!r}, the link runs "
                                 f"{p.protocol!r}")
            pattern = np.asarray(self._pattern_of(ann.slots))
            self._hold(pattern, deep=False)
            answer_fn = sifting.alice_answer_bb84 if p.protocol == "bb84" else \
                sifting.alice_answer_b92
            answer, sifted = answer_fn(ann, pattern)
            _wipe(pattern, deep=False)
            self._hold(sifted.bits, sifted.basis, sifted.intensity)
            self._sifted = sifted
            payload_out = answer.to_bytes()
        st.sifted_bits = len(sifted)
        self.state = "await_sample"
        return [(int(M.SIFT_ANSWER), payload_out)]

    def _on_sample(self, payload: bytes) -> list:
        st = self.stats
        p = self.params
        sifted = self._sifted
        with st.timed("estimation"):
            ann = est.SampleAnnouncement.from_bytes(payload)
            self._hold(ann.bits)
            n = len(sifted)
            if p.decoy:
                counts, n_key, n_test = decisions.decoy_counts(sifted.basis, sifted.intensity)
                want = np.flatnonzero(sifted.basis == 1 - sifting.KEY_BASIS)
                if not np.array_equal(ann.positions, want):
                    raise ValueError("decoy test disclosure must cover exactly the test-basis rows")
                verdict, kept = est.answer_by_class(sifted.bits, ann, sifted.intensity,
                                                    est.N_INTENSITIES)
                self._counts = counts
                self._verdict = verdict
                self._record_decoy(counts, verdict, n_key, n_test)
                decision = decisions.decoy_decision(p, st.qber_upper)
            else:
                k = decisions.sample_size(p, n)
                if ann.positions.size != k:
                    raise ValueError(f"sample of {ann.positions.size} bits, the link's rule "
                                     f"gives {k} for {n} sifted bits")
                verdict, kept = est.answer_by_class(sifted.bits, ann, sifted.basis, est.N_BASES)
                kept_basis = est.remove_positions(sifted.basis, ann.positions)
                e = decisions.sampled_estimate(
                    verdict, np.bincount(kept_basis, minlength=est.N_BASES), p.eps_sec)
                self._estimate = e
                self._verdict = verdict
                self._record_sampled(e)
                decision = decisions.sampled_decision(p, e)
            self._hold(kept)
            self._kept = kept
            _wipe(sifted.bits)
        out = [(int(M.EST_VERDICT), verdict.to_bytes())]
        if decision.abort:
            return out + self._abort(decision)
        self.state = "await_setup"
        return out

    def _on_setup(self, payload: bytes) -> list:
        with self.stats.timed("reconciliation"):
            setup = CascadeSetup.from_bytes(payload)
            want = get_schedule(self.params.schedule).schedule_id
            if setup.schedule_id != want:
                raise ValueError(f"Cascade schedule id {setup.schedule_id}, the link uses {want} "
                                 f"({self.params.schedule!r})")
            self._cascade = CascadeAlice(_split_frames(self._kept, self.params.frame_bits,
                                                       self.params.schedule, setup.qber))
            self._cascade.handle_setup(setup)
        self.state = "reconciling"
        return []

    def _on_request(self, payload: bytes) -> list:
        with self.stats.timed("reconciliation"):
            reply = self._cascade.handle_request(ParityRequest.from_bytes(payload))
            self.stats.round_trips += 1
        return [(int(M.PARITY_REPLY), reply.to_bytes())]

    def _on_tags(self, payload: bytes) -> list:
        st = self.stats
        p = self.params
        with st.timed("verification"):
            msg = VerifyMessage.from_bytes(payload)
            ok = tags_match(msg, self._kept, p.eps_cor)
        st.cascade_disclosed_bits = int(sum(self._cascade.disclosed_bits))
        self._drop_cascade()
        st.tag_bits = int(msg.tag_bits)
        st.leak_ec = charged_leak(st.cascade_disclosed_bits, st.tag_bits)
        if not ok:
            return self._abort(est.AbortDecision.because(
                _R.VERIFICATION_FAILED, f"verification tags differ ({st.tag_bits} tag bits, "
                                        f"eps_cor {p.eps_cor:g})"))
        with st.timed("finite_key"):
            bound = self._key_length(st.leak_ec)
        self._record_bound(bound)
        if bound.key_length == 0:
            return self._abort(est.AbortDecision.because(
                _R.NO_SECRET_KEY, f"{bound.bound} allows no key (raw length "
                                  f"{bound.terms.get('raw_length', 0.0):.1f})"))
        with st.timed("amplification"):
            n = self._kept.size
            seed = new_pa_seed(self.rng, n, bound.key_length)
            key = self._pa_hash(self._kept, seed, bound.key_length)
            payload_out = PaSeed(n, bound.key_length, seed).to_bytes()
        self._finish(key)
        return [(int(M.PA_SEED), payload_out)]
