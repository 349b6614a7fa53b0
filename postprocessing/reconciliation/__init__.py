"""Cascade information reconciliation: numba kernels, Alice/Bob roles, block schedules.

Public entry points: ``leak_ec_bits`` (leak_EC of the two-way traffic, see ``leakage``),
``reconcile`` (one frame, in process), ``reconcile_frames`` (a batch
through the two roles and encoded messages), ``CascadeAlice``/``CascadeBob`` (sans-I/O roles
for the daemon), ``SCHEDULES`` (by name: "original", "yan-plain", "yan"; "yan", the default,
is Yan et al. followed by a label tail that leaves far fewer frames wrong; see ``schedules``).
"""

from .errors import MessageError, ReconciliationError
from .leakage import ACCOUNTINGS, CascadeTraffic, leak_ec_bits
from .inprocess import (ReconcileResult, binary_entropy, efficiency_of, reconcile,
                        reconcile_frames, run_roles)
from .messages import CascadeSetup, FrameQuestions, ParityReply, ParityRequest, decode
from .roles import CascadeAlice, CascadeBob
from .schedules import SCHEDULES, CascadeSchedule, get_schedule

__all__ = [
    "ACCOUNTINGS", "CascadeAlice", "CascadeBob", "CascadeTraffic", "CascadeSchedule", "CascadeSetup", "FrameQuestions",
    "MessageError", "ParityReply", "ParityRequest", "ReconcileResult", "ReconciliationError",
    "SCHEDULES", "binary_entropy", "decode", "efficiency_of", "get_schedule", "leak_ec_bits",
    "reconcile",
    "reconcile_frames", "run_roles",
]
