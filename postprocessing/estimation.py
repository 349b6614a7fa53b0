"""Parameter estimation of one sifted block: sampled QBER with a finite-size bound, yields and
error counts per basis and intensity, the B92 conclusive-yield monitor, and abort decisions.

The sample exchange is split into two roles as message-in/message-out functions (the daemon
owns the socket): one end (usually Bob) calls ``announce_sample`` and sends the
``SampleAnnouncement``; the other calls ``answer_sample`` and sends back the ``SampleVerdict``.
Both ends drop the sampled bits from their key. Either role may be played by Alice or Bob.

Arrays: unpacked bits are uint8 0/1 (one per byte); basis uint8 (0 = Z/+, 1 = X/x); intensity
uint8 index (0 = signal mu, 1 = decoy nu1, 2 = decoy nu2). Vectorised numpy (bincount, fancy
indexing): per-block work, no per-bit Python loop.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

import numpy as np

from postprocessing.bits import BitsError, check_bits, pack_bits, unpack_bits
from postprocessing.finite_key import sampling_deviation
from postprocessing.randomness import ProtocolRandom
from postprocessing.sifting import KEY_BASIS

N_BASES = 2
N_INTENSITIES = 3


class EstimationInputError(ValueError):
    """An estimation argument or message is outside its accepted range."""


def estimate_qber_upper(errors: int, k: int, n: int, eps: float) -> float:
    """Upper bound on the QBER of the n unsampled key bits from ``errors`` in a k-bit sample.

    Serfling's bound for sampling without replacement, in the form of Tomamichel et al.,
    Nat. Commun. 3, 634 (2012): errors/k + mu, mu = sqrt((n + k)/(n k) (k + 1)/k ln(2/eps))
    (the ``mu`` term of ``finite_key.bb84_key_length``). Serfling gives
    P[key QBER > bound] <= exp(-2 n k^2 mu^2 / ((n + k)(k + 1))) = (eps/2)^2.
    Not clipped: a value >= 1/2 means no key can be distilled.
    """
    for name, v, lo in (("errors", errors, 0), ("k", k, 1), ("n", n, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise EstimationInputError(f"{name}={v!r} must be an integer >= {lo}")
    if errors > k:
        raise EstimationInputError(f"errors={errors!r} exceeds the sample size k={k!r}")
    if not (isinstance(eps, (int, float)) and 0.0 < eps < 1.0):
        raise EstimationInputError(f"eps={eps!r} must lie in the open interval (0, 1)")
    return errors / k + sampling_deviation(int(n), int(k), float(eps))


def choose_sample(n_sifted: int, k: int, rng: ProtocolRandom) -> np.ndarray:
    """k distinct positions out of n_sifted, sorted (int64), from the protocol's CSPRNG (a
    predictable sample lets Eve spare the sampled pulses)."""
    if not isinstance(rng, ProtocolRandom):
        raise EstimationInputError(f"rng must be a ProtocolRandom, got {type(rng).__name__}")
    if not (0 < k < n_sifted):
        raise EstimationInputError(
            f"sample size k={k!r} must lie in [1, n_sifted - 1] with n_sifted={n_sifted!r}")
    return np.sort(rng.choice(n_sifted, size=k, replace=False)).astype(np.int64)


def remove_positions(bits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Copy of ``bits`` without ``positions`` (disclosed bits never enter the key)."""
    keep = np.ones(bits.size, dtype=bool)
    keep[positions] = False
    return bits[keep]


_ANN_HEADER = struct.Struct(">4sII")
_ANN_MAGIC = b"QSA1"
_VERDICT = struct.Struct(">4sII")
_VERDICT_MAGIC = b"QSV1"


@dataclass(frozen=True, eq=False)
class SampleAnnouncement:
    """Sampled positions (sorted, uint32 on the wire) and the announcer's bits there."""

    n_sifted: int
    positions: np.ndarray
    bits: np.ndarray

    def to_bytes(self) -> bytes:
        k = int(self.positions.size)
        return (_ANN_HEADER.pack(_ANN_MAGIC, self.n_sifted, k)
                + self.positions.astype(">u4").tobytes() + pack_bits(self.bits).tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "SampleAnnouncement":
        if len(data) < _ANN_HEADER.size:
            raise EstimationInputError(
                f"sample announcement: {len(data)} bytes, need at least {_ANN_HEADER.size}")
        magic, n_sifted, k = _ANN_HEADER.unpack_from(data)
        if magic != _ANN_MAGIC:
            raise EstimationInputError(f"sample announcement: bad magic {magic!r}, "
                                       f"expected {_ANN_MAGIC!r}")
        want = _ANN_HEADER.size + 4 * k + (k + 7) // 8
        if len(data) != want:
            raise EstimationInputError(
                f"sample announcement: {len(data)} bytes, expected {want} for k={k}")
        off = _ANN_HEADER.size
        positions = np.frombuffer(data, dtype=">u4", count=k, offset=off).astype(np.int64)
        if k and (positions[-1] >= n_sifted or np.any(np.diff(positions) <= 0)):
            raise EstimationInputError(
                f"sample announcement: positions must be strictly increasing and < {n_sifted}")
        try:
            bits = unpack_bits(np.frombuffer(data, dtype=np.uint8, offset=off + 4 * k), k)
        except BitsError as exc:
            raise EstimationInputError(f"sample announcement: {exc}") from None
        return cls(n_sifted, positions, bits)


@dataclass(frozen=True)
class SampleVerdict:
    """The answerer's count of disagreements in the sample."""

    k: int
    errors: int

    def to_bytes(self) -> bytes:
        return _VERDICT.pack(_VERDICT_MAGIC, self.k, self.errors)

    @classmethod
    def from_bytes(cls, data: bytes) -> "SampleVerdict":
        if len(data) != _VERDICT.size:
            raise EstimationInputError(
                f"sample verdict: {len(data)} bytes, expected {_VERDICT.size}")
        magic, k, errors = _VERDICT.unpack(data)
        if magic != _VERDICT_MAGIC:
            raise EstimationInputError(f"sample verdict: bad magic {magic!r}, "
                                       f"expected {_VERDICT_MAGIC!r}")
        if errors > k:
            raise EstimationInputError(f"sample verdict: errors={errors} exceeds k={k}")
        return cls(k, errors)


def announce_sample(own_bits: np.ndarray, k: int, rng: ProtocolRandom
                    ) -> tuple[SampleAnnouncement, np.ndarray]:
    """Announcer's role: pick k positions, disclose own bits there; returns the message and
    the kept (unsampled) bits."""
    bits = check_bits(own_bits, "own_bits")
    positions = choose_sample(bits.size, k, rng)
    msg = SampleAnnouncement(int(bits.size), positions, bits[positions].copy())
    return msg, remove_positions(bits, positions)


def answer_sample(own_bits: np.ndarray, announcement: SampleAnnouncement
                  ) -> tuple[SampleVerdict, np.ndarray]:
    """Answerer's role: count disagreements at the announced positions; returns the verdict
    and the kept bits."""
    bits = check_bits(own_bits, "own_bits")
    if announcement.n_sifted != bits.size:
        raise EstimationInputError(f"sample announcement for {announcement.n_sifted} sifted bits, "
                                   f"but this end holds {bits.size}")
    pos = announcement.positions
    errors = int(np.count_nonzero(bits[pos] != announcement.bits))
    return SampleVerdict(int(pos.size), errors), remove_positions(bits, pos)


def announce_positions(own_bits: np.ndarray, positions: np.ndarray
                       ) -> tuple[SampleAnnouncement, np.ndarray]:
    """Announcer's role for positions fixed by the protocol rather than drawn (decoy BB84
    discloses every test-basis bit); returns the message and the kept bits."""
    bits = check_bits(own_bits, "own_bits")
    pos = np.asarray(positions, dtype=np.int64)
    if pos.ndim != 1 or (pos.size and (pos[0] < 0 or pos[-1] >= bits.size
                                       or np.any(np.diff(pos) <= 0))):
        raise EstimationInputError(
            f"positions must be strictly increasing and lie in [0, {bits.size - 1}]")
    msg = SampleAnnouncement(int(bits.size), pos, bits[pos].copy())
    return msg, remove_positions(bits, pos)


_CLASS_HEADER = struct.Struct(">4sB")
_CLASS_MAGIC = b"QSC1"
MAX_CLASSES = 16


@dataclass(frozen=True)
class ClassVerdict:
    """The answerer's disclosed-bit counts and disagreements per class (basis or intensity)."""

    counts: tuple[int, ...]
    errors: tuple[int, ...]

    @property
    def k(self) -> int:
        return sum(self.counts)

    @property
    def total_errors(self) -> int:
        return sum(self.errors)

    def to_bytes(self) -> bytes:
        n = len(self.counts)
        return (_CLASS_HEADER.pack(_CLASS_MAGIC, n)
                + struct.pack(f">{n}I{n}I", *self.counts, *self.errors))

    @classmethod
    def from_bytes(cls, data: bytes) -> "ClassVerdict":
        if len(data) < _CLASS_HEADER.size:
            raise EstimationInputError(f"class verdict: {len(data)} bytes, need at least "
                                       f"{_CLASS_HEADER.size}")
        magic, n = _CLASS_HEADER.unpack_from(data)
        if magic != _CLASS_MAGIC:
            raise EstimationInputError(f"class verdict: bad magic {magic!r}, "
                                       f"expected {_CLASS_MAGIC!r}")
        if not 1 <= n <= MAX_CLASSES or len(data) != _CLASS_HEADER.size + 8 * n:
            raise EstimationInputError(f"class verdict: {len(data)} bytes do not hold {n} "
                                       f"classes (1..{MAX_CLASSES}, 8 bytes each)")
        vals = struct.unpack_from(f">{n}I{n}I", data, _CLASS_HEADER.size)
        counts, errors = vals[:n], vals[n:]
        if any(e > c for c, e in zip(counts, errors)):
            raise EstimationInputError("class verdict: a class has more errors than bits")
        return cls(tuple(counts), tuple(errors))


def answer_by_class(own_bits: np.ndarray, announcement: SampleAnnouncement,
                    classes: np.ndarray, n_classes: int) -> tuple[ClassVerdict, np.ndarray]:
    """Answerer's role with disagreements split by a public label of each sifted row (basis,
    or intensity for decoy analysis); classes uint8 per sifted row, values < n_classes."""
    bits = check_bits(own_bits, "own_bits")
    if not 1 <= n_classes <= MAX_CLASSES:
        raise EstimationInputError(f"n_classes={n_classes!r} must lie in [1, {MAX_CLASSES}]")
    labels = _check_labels("classes", classes, bits.size, n_classes)
    if announcement.n_sifted != bits.size:
        raise EstimationInputError(f"sample announcement for {announcement.n_sifted} sifted bits, "
                                   f"but this end holds {bits.size}")
    pos = announcement.positions
    lab = labels[pos]
    wrong = bits[pos] != announcement.bits
    counts = np.bincount(lab, minlength=n_classes)
    errors = np.bincount(lab[wrong], minlength=n_classes)
    verdict = ClassVerdict(tuple(int(c) for c in counts), tuple(int(e) for e in errors))
    return verdict, remove_positions(bits, pos)


# --- yields and error counts per basis and intensity ------------------------------------------

def _check_labels(name: str, arr, size: int, n_values: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1 or a.size != size or not np.issubdtype(a.dtype, np.integer):
        raise EstimationInputError(f"{name}: expected a 1-D integer array of length {size}, "
                                   f"got {a.dtype} {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n_values):
        raise EstimationInputError(f"{name}: values must lie in [0, {n_values - 1}]")
    return a.astype(np.intp, copy=False)


def counts_by_basis_intensity(basis: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Sifted detections per (basis, intensity): int64[2, 3]."""
    b = _check_labels("basis", basis, np.asarray(basis).size, N_BASES)
    i = _check_labels("intensity", intensity, b.size, N_INTENSITIES)
    return np.bincount(b * N_INTENSITIES + i,
                       minlength=N_BASES * N_INTENSITIES).astype(np.int64).reshape(2, 3)


def errors_by_basis_intensity(alice_bits: np.ndarray, bob_bits: np.ndarray, basis: np.ndarray,
                              intensity: np.ndarray) -> np.ndarray:
    """Disagreements per (basis, intensity): int64[2, 3]. Only for disclosed bits."""
    a = check_bits(alice_bits, "alice_bits")
    b = check_bits(bob_bits, "bob_bits")
    if a.size != b.size:
        raise EstimationInputError(f"alice_bits has {a.size} bits, bob_bits {b.size}")
    bas = _check_labels("basis", basis, a.size, N_BASES)
    ins = _check_labels("intensity", intensity, a.size, N_INTENSITIES)
    wrong = a != b
    return np.bincount(bas[wrong] * N_INTENSITIES + ins[wrong],
                       minlength=N_BASES * N_INTENSITIES).astype(np.int64).reshape(2, 3)


def error_rates(errors: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """errors / counts elementwise (float64), NaN where nothing was counted."""
    e = np.asarray(errors, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    out = np.full(np.broadcast(e, c).shape, np.nan)
    np.divide(e, c, out=out, where=c > 0)
    return out


@dataclass(frozen=True, eq=False)
class YieldStats:
    """Detections per pulse sent (float64), with the sent and detected counts (int64); shape
    [3] per intensity, or [2, 3] per basis and intensity."""

    sent: np.ndarray
    detected: np.ndarray
    yields: np.ndarray


def yields_per_intensity(detected_intensity: np.ndarray, sent_per_intensity) -> YieldStats:
    """Gain Q_k = detections / pulses sent at intensity k (Alice's board counts the pulses)."""
    det_int = np.asarray(detected_intensity)
    ins = _check_labels("detected_intensity", det_int, det_int.size, N_INTENSITIES)
    sent = np.asarray(sent_per_intensity, dtype=np.int64)
    if sent.shape != (N_INTENSITIES,) or np.any(sent < 0):
        raise EstimationInputError(f"sent_per_intensity must be 3 counts >= 0, got {sent!r}")
    detected = np.bincount(ins, minlength=N_INTENSITIES).astype(np.int64)
    if np.any(detected > sent):
        raise EstimationInputError("more detections than pulses sent at some intensity "
                                   f"(detected {detected.tolist()}, sent {sent.tolist()})")
    return YieldStats(sent, detected, error_rates(detected, sent))


def yields_per_basis_intensity(basis: np.ndarray, intensity: np.ndarray,
                               sent_per_basis_intensity) -> YieldStats:
    """Gain per (Alice's basis, intensity) of the detected rows: arrays of shape [2, 3].

    A basis-dependent gain is a detector-control or efficiency-mismatch signature."""
    sent = np.asarray(sent_per_basis_intensity, dtype=np.int64)
    if sent.shape != (N_BASES, N_INTENSITIES) or np.any(sent < 0):
        raise EstimationInputError(f"sent_per_basis_intensity must be 2x3 counts >= 0, "
                                   f"got shape {sent.shape}")
    detected = counts_by_basis_intensity(basis, intensity)
    if np.any(detected > sent):
        raise EstimationInputError("more detections than pulses sent in some basis/intensity "
                                   f"(detected {detected.tolist()}, sent {sent.tolist()})")
    return YieldStats(sent, detected, error_rates(detected, sent))


@dataclass(frozen=True, eq=False)
class DecoyStatistics:
    """Counts Lim et al. 2014 needs: int64 [basis, intensity] arrays (basis 0 = Z, 1 = X).

    ``errors`` is only meaningful where the bits were disclosed (the test basis in full).
    """

    counts: np.ndarray
    errors: np.ndarray

    def lim_arguments(self, key_basis: int = KEY_BASIS) -> dict:
        """Keyword arguments for ``finite_key.decoy_key_length`` (without eps, leak, mu, p).

        Lim's "X" is the key basis and "Z" the test basis, whatever our basis labels are.
        """
        if key_basis not in (0, 1):
            raise EstimationInputError(f"key_basis={key_basis!r} must be 0 (Z) or 1 (X)")
        test_basis = 1 - key_basis
        return {"n_x": self.counts[key_basis].tolist(), "n_z": self.counts[test_basis].tolist(),
                "m_z": self.errors[test_basis].tolist(), "m_x": self.errors[key_basis].tolist()}


def decoy_statistics(alice_bits: np.ndarray, bob_bits: np.ndarray, basis: np.ndarray,
                     intensity: np.ndarray) -> DecoyStatistics:
    """Per-basis, per-intensity detections and disagreements of one sifted block."""
    return DecoyStatistics(counts_by_basis_intensity(basis, intensity),
                           errors_by_basis_intensity(alice_bits, bob_bits, basis, intensity))


# --- B92 conclusive-yield monitor --------------------------------------------------------------

@dataclass(frozen=True)
class YieldCheck:
    """Result of comparing the conclusive count with its calibrated expectation."""

    observed: int
    pulses: int
    expected_per_pulse: float
    threshold: float
    drop: bool
    eps: float
    rel_tolerance: float

    @property
    def observed_per_pulse(self) -> float:
        return self.observed / self.pulses


def check_conclusive_yield(conclusive: int, pulses: int, expected_per_pulse: float, *,
                           eps: float = 1e-9, rel_tolerance: float = 0.1) -> YieldCheck:
    """Flag a conclusive-yield drop (reference.md section 2: a B92 USD attack shows only there).

    Without attack the conclusive count is binomial with mean >= lam = (1 - rel_tolerance) N p
    (rel_tolerance absorbs calibration drift). Chernoff's lower tail
    P(X <= lam - t) <= exp(-t^2 / (2 lam)) gives the threshold lam - sqrt(2 lam ln(1/eps)):
    a false alarm has probability <= eps.
    """
    if isinstance(pulses, bool) or not isinstance(pulses, (int, np.integer)) or pulses < 1:
        raise EstimationInputError(f"pulses={pulses!r} must be an integer >= 1")
    if not (0 <= conclusive <= pulses):
        raise EstimationInputError(f"conclusive={conclusive!r} must lie in [0, pulses={pulses}]")
    if not (0.0 < expected_per_pulse <= 1.0):
        raise EstimationInputError(
            f"expected_per_pulse={expected_per_pulse!r} must lie in (0, 1]")
    if not (0.0 < eps < 1.0):
        raise EstimationInputError(f"eps={eps!r} must lie in the open interval (0, 1)")
    if not (0.0 <= rel_tolerance < 1.0):
        raise EstimationInputError(f"rel_tolerance={rel_tolerance!r} must lie in [0, 1)")
    lam = (1.0 - rel_tolerance) * pulses * expected_per_pulse
    threshold = lam - math.sqrt(2.0 * lam * math.log(1.0 / eps))
    return YieldCheck(int(conclusive), int(pulses), float(expected_per_pulse), threshold,
                      bool(conclusive < threshold), float(eps), float(rel_tolerance))


# --- abort decisions ---------------------------------------------------------------------------

class AbortReason(str, enum.Enum):
    """Why a block was discarded (the value is what logs and stats records carry)."""

    TOO_FEW_SIFTED_BITS = "too_few_sifted_bits"
    SAMPLE_TOO_SMALL = "sample_too_small"
    QBER_ABOVE_THRESHOLD = "qber_above_threshold"
    YIELD_DROP = "conclusive_yield_drop"
    RECONCILIATION_FAILED = "reconciliation_failed"
    VERIFICATION_FAILED = "verification_failed"
    NO_SECRET_KEY = "no_secret_key"
    NO_SECURITY_PROOF = "no_security_proof"
    MULTI_CLICK_EXCESS = "multi_click_excess"
    PEER_ABORT = "peer_abort"
    PROTOCOL_ERROR = "protocol_error"
    ASSUMPTION_VIOLATED = "proof_assumption_violated"


@dataclass(frozen=True)
class AbortDecision:
    """Go/no-go for a block with every reason that applied (empty when the block goes on)."""

    reasons: tuple[AbortReason, ...] = ()
    details: tuple[str, ...] = ()

    @property
    def abort(self) -> bool:
        return bool(self.reasons)

    @property
    def reason(self) -> AbortReason | None:
        return self.reasons[0] if self.reasons else None

    @classmethod
    def because(cls, reason: AbortReason, detail: str) -> "AbortDecision":
        return cls((reason,), (detail,))


def decide_abort(*, qber_upper: float, qber_threshold: float, sample_size: int,
                 min_sample_size: int, yield_check: YieldCheck | None = None) -> AbortDecision:
    """Collect every reason to discard a block after parameter estimation."""
    if not (0.0 < qber_threshold < 0.5):
        raise EstimationInputError(f"qber_threshold={qber_threshold!r} must lie in (0, 0.5)")
    reasons: list[AbortReason] = []
    details: list[str] = []
    if sample_size < min_sample_size:
        reasons.append(AbortReason.SAMPLE_TOO_SMALL)
        details.append(f"sample of {sample_size} bits, need >= {min_sample_size}")
    if qber_upper > qber_threshold:
        reasons.append(AbortReason.QBER_ABOVE_THRESHOLD)
        details.append(f"QBER upper bound {qber_upper:.4f} > threshold {qber_threshold:.4f}")
    if yield_check is not None and yield_check.drop:
        reasons.append(AbortReason.YIELD_DROP)
        details.append(f"conclusive yield {yield_check.observed_per_pulse:.3e}/pulse below "
                       f"{yield_check.threshold / yield_check.pulses:.3e} "
                       f"(expected {yield_check.expected_per_pulse:.3e})")
    return AbortDecision(tuple(reasons), tuple(details))
