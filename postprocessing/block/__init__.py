"""One block of key distillation between two nodes, as two sans-I/O role objects.

``BobBlock(params, slots, channels, valid, n_pulses, rng)`` and ``AliceBlock(params, pattern_of,
rng)`` exchange messages ``(msg_type, payload_bytes)``; ``start()`` opens (Bob's returns the
first message, Alice's nothing), ``receive(msg)`` returns the replies, ``done``/``outcome`` tell
how the block ended (``BlockOutcome``: key, stats, aborted, reasons). ``BlockParams`` holds what
the link fixes in advance; ``decisions`` holds every rule both ends apply. ``distill`` wires the
two roles in one process; the daemon's link engine carries the same messages over the peer
channel.

Steps (B = Bob, A = Alice; docs/block-protocol.md has the payloads byte by byte):

1. sifting        B->A SIFT_ANNOUNCE (1)   slots of Bob's (conclusive) detections, BB84 bases
                  A->B SIFT_ANSWER (2)     keep mask, intensity tags of kept rows
2. estimation     B->A EST_SAMPLE (3)      sampled positions and Bob's bits there (decoy BB84:
                                           every test-basis row)
                  A->B EST_VERDICT (4)     disagreements per basis (decoy: per intensity)
                  both ends decide; B92 always stops here (no_security_proof), after its
                  QBER, conclusive-yield and multi-click statistics are recorded
3. reconciliation B->A CASCADE_SETUP (5)   permutation seed (Bob's ProtocolRandom), schedule,
                                           QBER, frame sizes
                  B->A PARITY_REQUEST (6)  one per round, every frame of the block
                  A->B PARITY_REPLY (7)    Alice's parities (all counted as leakage)
4. verification   B->A VERIFY_TAGS (8)     random points and Bob's tags of his corrected key
5. amplification  A->B PA_SEED (9)         key length and a fresh Toeplitz seed (Alice's
                                           ProtocolRandom); Bob recomputes the length and must
                                           agree
   any time       either ABORT (15)        reason codes and text; the receiver stops too

LT3 (``finite_key_lt``): SIFT_ANNOUNCE/SIFT_ANSWER carry its own payloads (``sifting.lt3``: Bob's
bases and X-basis bits, Alice's state class and intensity per row) and make the whole count
table public, so both ends decide right after SIFT_ANSWER and Bob goes on to CASCADE_SETUP
(no EST_SAMPLE/EST_VERDICT); the key rows are Z state, Z detector, intensity mu.

A message of the wrong type for the state, or one that does not decode, aborts the block with
``protocol_error`` and sends ABORT; a role never raises for peer input.
"""

from postprocessing.block.messages import (Abort, BlockMessageError, MessageType, PaSeed,
                                           PeerMessage)
from postprocessing.block.params import (DEFAULT_QBER_TOL, BlockParams, BlockParamsError,
                                         qber_tol_for)
from postprocessing.block.roles import AliceBlock, BlockOutcome, BlockRoleError, BobBlock
from postprocessing.block.stats import BlockStats

__all__ = ["Abort", "AliceBlock", "BlockMessageError", "BlockOutcome", "BlockParams",
           "BlockParamsError", "BlockRoleError", "BlockStats", "BobBlock", "DEFAULT_QBER_TOL",
           "MessageType", "PaSeed", "PeerMessage", "qber_tol_for"]
