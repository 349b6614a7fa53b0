"""Bob's last step, common to every protocol: keep the rows Alice kept."""

from __future__ import annotations

import numpy as np

from postprocessing.sifting.errors import SiftMessageError
from postprocessing.sifting.kernels import compact_kept
from postprocessing.sifting.messages import SiftAnswer
from postprocessing.sifting.records import BobDetections, BobSifted


def bob_apply_answer(answer: SiftAnswer, detections: BobDetections) -> BobSifted:
    """Bob keeps the rows Alice kept; works for either protocol."""
    if not isinstance(answer, SiftAnswer):
        raise SiftMessageError(f"expected a SiftAnswer, got {type(answer).__name__}")
    answer.validate()
    if answer.protocol != detections.protocol:
        raise SiftMessageError(f"answer is for {answer.protocol!r}, Bob announced "
                               f"{detections.protocol!r}")
    n = detections.slots.size
    if answer.keep.size != n:
        raise SiftMessageError(f"answer covers {answer.keep.size} rows, Bob announced {n}")
    slots = np.empty(n, np.int64)
    basis = np.empty(n, np.uint8)
    bits = np.empty(n, np.uint8)
    k = compact_kept(answer.keep, detections.slots, detections.basis, detections.bits, slots,
                     basis, bits)
    if detections.protocol == "b92":
        basis[:k] = 0
    return BobSifted(bits[:k], basis[:k], answer.intensity.copy(), slots[:k])
