"""Carry-less 64x64 -> 128-bit multiplication, the primitive under every GF(2) kernel here.

The hardware path is the x86 ``pclmulqdq`` instruction, reached from numba through an
``@intrinsic`` that calls LLVM's ``llvm.x86.pclmulqdq``. Hosts without it (or a numba configured
for a generic CPU) get a portable shift-and-xor version instead; ``HAVE_PCLMUL`` says which one
``clmul64`` is. Both return ``(lo, hi)`` uint64 words of the 128-bit product.

``clmul_rows_512`` (AVX-512 VPCLMULQDQ hosts, ``HAVE_VPCLMUL512``) does eight such products per
instruction pair for the Toeplitz base case; ``xor_words``/``copy_words`` are 512-bit word loops
for the Karatsuba bookkeeping (numba cannot vectorise offset-indexed loops on one buffer).
All arrays are uint64, offsets and lengths in words.
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


def _host_has_vpclmul512() -> bool:
    if not HAVE_PCLMUL:
        return False
    try:
        from llvmlite import binding as llb
        feats = llb.get_host_cpu_features()
        return all(feats.get(f, False) for f in ("vpclmulqdq", "avx512f", "avx512bw"))
    except Exception:
        return False


HAVE_VPCLMUL512 = _host_has_vpclmul512()


def _is_u64_array(t) -> bool:
    # the intrinsics address raw data: only contiguous 1-D uint64 arrays are safe
    return (isinstance(t, types.Array) and t.dtype == types.uint64 and t.ndim == 1
            and t.layout == "C")


@intrinsic
def clmul_rows_512(typingctx, buf, dtop, xoff, w, ngroups, acc):
    """acc[2I], acc[2I+1] = lo, hi of xor_J clmul(buf[dtop + I - J], buf[xoff + J]), J < w,
    for I < 8 * ngroups, eight rows per pair of ``vpclmulqdq`` (512-bit) instructions.

    buf, acc: uint64 arrays; reads buf[dtop - w + 1 : dtop + 8 * ngroups]. Hosts with
    ``HAVE_VPCLMUL512`` only (LLVM cannot lower it elsewhere).
    """
    if not (_is_u64_array(buf) and _is_u64_array(acc)):
        return None
    sig = types.void(buf, types.intp, types.intp, types.intp, types.intp, acc)

    def codegen(context, builder, signature, args):
        bufv, dtop_v, xoff_v, w_v, ng_v, accv = args
        data = context.make_array(signature.args[0])(context, builder, bufv).data
        adata = context.make_array(signature.args[5])(context, builder, accv).data
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        v8 = ir.VectorType(i64, 8)
        v8p = v8.as_pointer()
        zero = ir.Constant(v8, [0] * 8)
        fnty = ir.FunctionType(v8, [v8, v8, ir.IntType(8)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.pclmulqdq.512")
        acc_e = cgutils.alloca_once(builder, v8)
        acc_o = cgutils.alloca_once(builder, v8)
        bcast = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
        lo_mask = ir.Constant(ir.VectorType(i32, 8), [0, 1, 8, 9, 2, 3, 10, 11])
        hi_mask = ir.Constant(ir.VectorType(i32, 8), [4, 5, 12, 13, 6, 7, 14, 15])
        with cgutils.for_range(builder, ng_v) as gloop:
            g = gloop.index
            builder.store(zero, acc_e)
            builder.store(zero, acc_o)
            base = builder.add(dtop_v, builder.mul(g, ir.Constant(g.type, 8)))
            with cgutils.for_range(builder, w_v) as jloop:
                j = jloop.index
                dptr = builder.bitcast(builder.gep(data, [builder.sub(base, j)]), v8p)
                dvec = builder.load(dptr, align=8)
                xval = builder.load(builder.gep(data, [builder.add(xoff_v, j)]))
                xvec = builder.insert_element(ir.Constant(v8, None), xval, ir.Constant(i32, 0))
                xvec = builder.shuffle_vector(xvec, ir.Constant(v8, None), bcast)
                pe = builder.call(fn, [dvec, xvec, ir.Constant(ir.IntType(8), 0x00)])
                po = builder.call(fn, [dvec, xvec, ir.Constant(ir.IntType(8), 0x01)])
                builder.store(builder.xor(builder.load(acc_e), pe), acc_e)
                builder.store(builder.xor(builder.load(acc_o), po), acc_o)
            ae = builder.load(acc_e)
            ao = builder.load(acc_o)
            out = builder.gep(adata, [builder.mul(g, ir.Constant(g.type, 16))])
            builder.store(builder.shuffle_vector(ae, ao, lo_mask), builder.bitcast(out, v8p),
                          align=8)
            out8 = builder.gep(out, [ir.Constant(g.type, 8)])
            builder.store(builder.shuffle_vector(ae, ao, hi_mask), builder.bitcast(out8, v8p),
                          align=8)
        return context.get_dummy_value()

    return sig, codegen


def _words_codegen(context, builder, signature, args, with_b):
    """buf[dst + i] = buf[a + i] (^ buf[b + i]) for i < n, eight words per vector op.

    Ranges may coincide exactly (dst == a) but must not otherwise overlap.
    """
    if with_b:
        bufv, dst, a, b, n = args
    else:
        bufv, dst, a, n = args
    data = context.make_array(signature.args[0])(context, builder, bufv).data
    v8p = ir.VectorType(ir.IntType(64), 8).as_pointer()
    eight = ir.Constant(n.type, 8)
    n8 = builder.udiv(n, eight)
    with cgutils.for_range(builder, n8) as loop:
        off = builder.mul(loop.index, eight)
        val = builder.load(builder.bitcast(builder.gep(data, [builder.add(a, off)]), v8p),
                           align=8)
        if with_b:
            vb = builder.load(builder.bitcast(builder.gep(data, [builder.add(b, off)]), v8p),
                              align=8)
            val = builder.xor(val, vb)
        builder.store(val, builder.bitcast(builder.gep(data, [builder.add(dst, off)]), v8p),
                      align=8)
    done = builder.mul(n8, eight)
    with cgutils.for_range(builder, builder.sub(n, done)) as loop:
        off = builder.add(done, loop.index)
        val = builder.load(builder.gep(data, [builder.add(a, off)]))
        if with_b:
            val = builder.xor(val, builder.load(builder.gep(data, [builder.add(b, off)])))
        builder.store(val, builder.gep(data, [builder.add(dst, off)]))
    return context.get_dummy_value()


@intrinsic
def xor_words(typingctx, buf, dst, a, b, n):
    """buf[dst:dst+n] = buf[a:a+n] ^ buf[b:b+n] on uint64 words (dst may equal a or b)."""
    if not _is_u64_array(buf):
        return None
    sig = types.void(buf, types.intp, types.intp, types.intp, types.intp)
    return sig, lambda c, b_, s, args: _words_codegen(c, b_, s, args, True)


@intrinsic
def copy_words(typingctx, buf, dst, a, n):
    """buf[dst:dst+n] = buf[a:a+n] on uint64 words (non-overlapping)."""
    if not _is_u64_array(buf):
        return None
    sig = types.void(buf, types.intp, types.intp, types.intp)
    return sig, lambda c, b_, s, args: _words_codegen(c, b_, s, args, False)
