"""leak_EC for Cascade: what the whole two-way exchange tells an eavesdropper.

Tupkary & Lutkenhaus, "Using Cascade in quantum key distribution", Phys. Rev. Applied 20,
064040 (2023), arXiv:2307.00576, point out that counting only Alice's parity bits ignores
Bob's half of the conversation. In this implementation Bob's questions reveal, for every
parity Alice sent, whether his own parity of that range agreed (he searches a range exactly
when it did not): the parities of the error pattern W = X xor Y (Alice's key X, Bob's Y) on
the ranges compared. Bob's decisions depend on his bits only through those comparisons
(``kernels``: "Bob's decisions depend only on (Alice's parity XOR Bob's parity)"), so the
whole transcript is a function of
  (a) Alice's parities of X on the ranges asked (``disclosed_bits``), and
  (b) parities of W, at most one per parity Bob compared (``bob_compared_bits``),
plus the public seeds and schedule. Two valid ways to charge it:

``ERROR_PATTERN_PUBLIC`` (the paper's approach): let the key-rate bound hold with the error
pattern W given to Eve, then charge only (a). This costs nothing extra exactly when the
bound's entropy term is unchanged by announcing W. That is the case for a bound from the
phase-error rate, as both BB84 bounds of ``finite_key`` are (Tomamichel et al. 2012, Lim et
al. 2014): announcing W is a measurement of Z_A Z_B on each pair, which commutes with the
phase-error observable X_A X_B, so the phase-error statistics and their estimate from the
test sample are the same with or without it. (The paper's lower rates come from numerical
bounds that use fine-grained statistics of asymmetric channels, where W is not free.)

``FULL_TRANSCRIPT``: charge (a) + (b), the chain rule on every bit either party's messages
can carry. Valid with any bound, including ones not derived from a phase-error rate (the old
B92 rule, any numerical bound); it costs one bit per parity Bob compared.

The verification tag (``tag_bits``) is charged under both. Counts come from
``ReconcileResult``; the kernels count as before (no extra work per parity).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ReconciliationError

ERROR_PATTERN_PUBLIC = "error-pattern-public"
FULL_TRANSCRIPT = "full-transcript"
ACCOUNTINGS = (ERROR_PATTERN_PUBLIC, FULL_TRANSCRIPT)


@dataclass(frozen=True)
class CascadeTraffic:
    """What one block's reconciliation and verification disclosed, per party."""

    alice_parity_bits: int   # parity bits Alice's replies carried
    bob_compared_bits: int   # Alice's parities Bob compared with his own
    tag_bits: int = 0        # verification tag

    def __post_init__(self) -> None:
        for name in ("alice_parity_bits", "bob_compared_bits", "tag_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReconciliationError(f"{name}={value!r} must be an integer >= 0")
        if self.bob_compared_bits > self.alice_parity_bits:
            raise ReconciliationError(
                f"bob_compared_bits={self.bob_compared_bits} exceeds the "
                f"{self.alice_parity_bits} parities Alice sent")

    @classmethod
    def of(cls, results, tag_bits: int = 0) -> "CascadeTraffic":
        """Summed over one ``ReconcileResult`` or a list of them (the frames of a block)."""
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        alice = sum(int(r.disclosed_bits) for r in results)
        if any(r.bob_compared_bits < 0 for r in results):
            raise ReconciliationError("a ReconcileResult without bob_compared_bits: Bob's "
                                      "side was not counted")
        bob = sum(int(r.bob_compared_bits) for r in results)
        return cls(alice, bob, int(tag_bits))


def leak_ec_bits(traffic, *, tag_bits: int | None = None,
                 accounting: str = ERROR_PATTERN_PUBLIC) -> int:
    """leak_EC in bits for the key-length bound, from a ``CascadeTraffic`` or
    ``ReconcileResult``(s) (then give ``tag_bits``).

    ``ERROR_PATTERN_PUBLIC`` only with a bound whose entropy term holds with the bit-error
    pattern public (phase-error bounds: Tomamichel 2012, Lim 2014); ``FULL_TRANSCRIPT``
    with any bound.
    """
    if accounting not in ACCOUNTINGS:
        raise ReconciliationError(f"accounting={accounting!r} is not one of "
                                  f"{', '.join(ACCOUNTINGS)}")
    if not isinstance(traffic, CascadeTraffic):
        traffic = CascadeTraffic.of(traffic, 0 if tag_bits is None else tag_bits)
    elif tag_bits is not None:
        raise ReconciliationError("tag_bits is part of the CascadeTraffic given; pass it once")
    leak = traffic.alice_parity_bits + traffic.tag_bits
    if accounting == FULL_TRANSCRIPT:
        leak += traffic.bob_compared_bits
    return leak
