"""Carry-less 64x64 -> 128-bit multiplication, the primitive under every GF(2) kernel here.

The hardware path is the x86 ``pclmulqdq`` instruction, reached from numba through an
``@intrinsic`` that calls LLVM's ``llvm.x86.pclmulqdq``. Hosts without it (or a numba configured
for a generic CPU) get a portable shift-and-xor version instead; ``HAVE_PCLMUL`` says which one
``clmul64`` is. Both return ``(lo, hi)`` uint64 words of the 128-bit product.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_U1 = np.uint64(1)
_U0 = np.uint64(0)


def _host_has_pclmul() -> bool:
    # A numba told to compile for a generic CPU would not enable the instruction in LLVM.
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    try:
        from llvmlite import binding as llb
        return bool(llb.get_host_cpu_features().get("pclmul", False))
    except Exception:  # feature query unavailable: stay portable
        return False


HAVE_PCLMUL = _host_has_pclmul()


@numba.njit(cache=True, nogil=True)
def clmul64_sw(a, b):
    """Portable carry-less product of two uint64 words: (lo, hi)."""
    a = np.uint64(a)
    b = np.uint64(b)
    lo = _U0
    hi = _U0
    for i in range(64):
        mask = _U0 - ((b >> np.uint64(i)) & _U1)  # all ones iff bit i of b is set
        lo ^= (a << np.uint64(i)) & mask
        if i:
            hi ^= (a >> np.uint64(64 - i)) & mask
    return lo, hi


@intrinsic
def _pclmul_intrinsic(typingctx, a, b):
    if not (isinstance(a, types.Integer) and isinstance(b, types.Integer)):
        return None
    sig = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v2 = ir.VectorType(i64, 2)
        zero = ir.Constant(ir.IntType(32), 0)
        one = ir.Constant(ir.IntType(32), 1)
        va = builder.insert_element(ir.Constant(v2, None), args[0], zero)
        vb = builder.insert_element(ir.Constant(v2, None), args[1], zero)
        fnty = ir.FunctionType(v2, [v2, v2, ir.IntType(8)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.pclmulqdq")
        r = builder.call(fn, [va, vb, ir.Constant(ir.IntType(8), 0)])
        lo = builder.extract_element(r, zero)
        hi = builder.extract_element(r, one)
        return context.make_tuple(builder, signature.return_type, [lo, hi])

    return sig, codegen


if HAVE_PCLMUL:
    @numba.njit(cache=True, nogil=True, inline="always")
    def clmul64_hw(a, b):
        """Carry-less product through ``pclmulqdq``: (lo, hi)."""
        return _pclmul_intrinsic(np.uint64(a), np.uint64(b))
else:
    clmul64_hw = clmul64_sw

clmul64 = clmul64_hw if HAVE_PCLMUL else clmul64_sw
