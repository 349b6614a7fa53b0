"""Cascade kernels: Alice's parity answers, Bob's round-by-round correcting state machine.

Both roles run in rounds. Each round Bob sends one batch of questions (the top-level block
parities of a new pass, and/or the parity of one sub-range per active binary search) and Alice
answers every question with one parity bit (a schedule with C_OMIT leaves out the parity of
block 0 of every pass after the first: Bob derives it from the first pass's parities). Bob's
decisions depend only on (Alice's parity XOR Bob's parity) of the ranges he asked about, so
the two-role path (messages) and the fused path (both roles in one kernel) disclose exactly the
same bits by construction: they call the same ``bob_round`` and ``alice_answer``.

Search policy (batched Cascade): Bob keeps every parity Alice disclosed (block parities and
the left half of every split he asked about) and tracks, for each, whether his bits agree.
A search starts from the shortest known range with an odd difference and walks down known
splits for free; it asks only about unknown splits. Only searches of the lowest pass that has
any ask questions in a round (a correction found in a short block often evens out a long odd
block, whose search is then dropped), and at most ``ctl[C_MAXQ]`` of them (0 = no cap): fewer
questions per round cost round trips but find more errors through short blocks.

Data layout: key bits are unpacked uint8 0/1, one bit per byte, in FIRST-PASS ORDER: both
parties first reorder their frame by the first pass's shuffle (``order``), so the first pass
reads consecutive bytes (its searches, which find most errors, then stay in cache) and every
later pass is a shuffle of that order. perm/inv are int32[n_rows, n_bits] shuffles (row r:
pass position -> index, and back); ``pinfo`` int64[2, n_passes] gives each pass its row (-1:
the first pass, no shuffle) and its halving bit (-1: none, the pass reads its row as is).
A halving pass with bit t reads its row as a random label per index and orders the frame by
label, bit t = 0 first (``label_of_rank``), so its two blocks are "bit t of the label is 0 /
1": both parties get the block parities of every halving pass from one XOR of the labels of
their 1 bits (``C_HACC``, updated per correction) instead of a gather per pass. Halving
passes on row 0 (the second pass's shuffle: the "yan" position tail) read a position in the
second pass as the label, with their own XOR ``C_HACC2``.
A pass's blocks are consecutive runs of ``sizes[p]`` positions (the last may be shorter).
Per-block state lives in flat arrays indexed ``offs[p] + block``; Bob's knowledge of split
halves in ``node`` (uint8[n_passes, n_bits]), his bits in each shuffled pass's order in
``bp`` (uint8[n_rows, n_bits]).
"""

from __future__ import annotations

import numba
import numpy as np

# rows of the uint8 per-block state ``u8``
U_APAR, U_DIFF, U_BUSY, U_CAND = 0, 1, 2, 3
N_U8 = 4
# rows of the int64 per-search state ``st`` (search slots) and the candidate list
S_PASS, S_LO, S_HI, S_BLOCK, S_PENDING, S_SEEN, S_CAND = 0, 1, 2, 3, 4, 5, 6
S_STACK = 7  # rows 7-9: depth-first stack of _smallest_odd_range
S_VER = 10  # per block: corrections that landed in it so far (a search whose S_SEEN equals
N_ST = 11   # it knows its range is still odd without walking the split tree)
MIN_ST_COLUMNS = 160  # the stack needs 2 per tree level (< 32 levels) + 1
# bits of ``node[pass, mid]``: what Bob knows about the left half [lo, mid) of the range of
# the split tree that is cut at position ``mid`` (every range is cut at its middle)
NODE_KNOWN, NODE_ALICE, NODE_DIFF = 1, 2, 4
# fields of the int64 control vector ``ctl``
(C_CUR, C_NSEARCH, C_NCAND, C_REQ, C_DONE, C_DISCLOSED, C_ROUNDS, C_FLIPS, C_MAXQ, C_HACC,
 C_TOT, C_BASE, C_OMIT, C_ATOT, C_HACC2, C_BASE2) = range(16)
N_CTL = 16
# C_BASE2/C_HACC2: the same as C_BASE/C_HACC for halving passes that read the second pass's
# row (row 0) as labels (the "yan" schedule's position tail), -1/0 if there are none
# C_OMIT (both roles, from the schedule): 1 = every pass after the first leaves out the parity
# of its block 0, which Bob derives as Alice's total parity (C_ATOT, the XOR of her first-pass
# block parities) XOR the parities of the pass's other blocks: it carries no information, so
# it is neither sent nor counted.


@numba.njit(cache=True, nogil=True, inline="always")
def label_of_rank(q, t, z):
    """Label at position q of a halving pass: labels with bit t = 0 (z of them) ascending,
    then those with bit t = 1 ascending."""
    if q < z:
        r = q
        one = 0
    else:
        r = q - z
        one = 1 << t
    return ((r >> t) << (t + 1)) | one | (r & ((1 << t) - 1))


@numba.njit(cache=True, nogil=True, inline="always")
def rank_of_label(v, t, z):
    """Inverse of ``label_of_rank``."""
    r = ((v >> (t + 1)) << t) | (v & ((1 << t) - 1))
    if (v >> t) & 1:
        r += z
    return r


@numba.njit(cache=True, nogil=True, inline="always")
def _pos_at(perm, pinfo, sizes, p, q):
    """Frame index at position q of pass p."""
    t = pinfo[1, p]
    if pinfo[0, p] < 0:
        return np.int64(q)
    if t < 0:
        return np.int64(perm[pinfo[0, p], q])
    return np.int64(perm[pinfo[0, p], label_of_rank(q, t, sizes[p])])


@numba.njit(cache=True, nogil=True, inline="always")
def _q_of(inv, pinfo, sizes, p, pos):
    """Position of frame index ``pos`` in pass p."""
    t = pinfo[1, p]
    if pinfo[0, p] < 0:
        return np.int64(pos)
    if t < 0:
        return np.int64(inv[pinfo[0, p], pos])
    return rank_of_label(np.int64(inv[pinfo[0, p], pos]), t, sizes[p])


# Hot loops index with uint64 (U(...)): numba then skips its negative-index wrap-around test,
# which lets LLVM vectorize the XOR over consecutive bytes (~10x on 100 bytes). A uint64 must
# only ever be used as an index: uint64 mixed with int64 arithmetic turns into float64.
U = np.uint64


@numba.njit(cache=True, nogil=True, inline="always")
def _xor_bytes(x, lo, hi):
    """XOR of x[lo:hi] (uint8 0/1, consecutive)."""
    acc = np.uint8(0)
    for q in range(U(lo), U(hi)):
        acc ^= x[q]
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _range_parity(bits, perm, pinfo, sizes, p, lo, hi):
    """XOR of bits at positions [lo, hi) of pass p."""
    if pinfo[0, p] < 0:
        return _xor_bytes(bits, lo, hi)
    acc = np.uint8(0)
    r = pinfo[0, p]
    t = pinfo[1, p]
    if t < 0:
        for q in range(U(lo), U(hi)):
            acc ^= bits[U(perm[r, q])]
    else:
        z = sizes[p]
        for q in range(lo, hi):
            acc ^= bits[U(perm[r, U(label_of_rank(q, t, z))])]
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _bob_range_parity(bits, bp, perm, pinfo, sizes, p, lo, hi):
    """Bob's XOR over positions [lo, hi) of pass p, read from his copy of the bits in that
    pass's order when the pass has one (consecutive bytes instead of a gather)."""
    row = pinfo[0, p]
    if row < 0 or pinfo[1, p] >= 0:
        return _range_parity(bits, perm, pinfo, sizes, p, lo, hi)
    return _xor_bytes(bp[row], lo, hi)


@numba.njit(cache=True, nogil=True)
def _block_parities(bits, perm, pinfo, sizes, offs, p, ctl, out, w, first):
    """Parities of blocks first, first + 1, ... of pass p into out[w:]; returns the new write
    index. A halving pass reads them from the label XOR of its row (ctl: C_HACC or C_HACC2)
    and the total parity C_TOT."""
    n = bits.shape[0]
    t = pinfo[1, p]
    n_blocks = offs[p + 1] - offs[p]
    if t >= 0:
        hacc = ctl[C_HACC] if pinfo[0, p] == ctl[C_BASE] else ctl[C_HACC2]
        tot = ctl[C_TOT]
        one = (hacc >> t) & 1
        if first == 0:
            out[w] = tot ^ one
            w += 1
        if n_blocks == 2:
            out[w] = one
            w += 1
        return w
    k = sizes[p]
    if pinfo[0, p] < 0:
        for b in range(first, n_blocks):
            out[w] = _xor_bytes(bits, b * k, min(b * k + k, n))
            w += 1
        return w
    r = pinfo[0, p]
    for b in range(first, n_blocks):
        acc = np.uint8(0)
        for q in range(U(b * k), U(min(b * k + k, n))):
            acc ^= bits[U(perm[r, q])]
        out[w] = acc
        w += 1
    return w


@numba.njit(cache=True, nogil=True)
def label_parity(bits, inv, pinfo, ctl):
    """Set ctl[C_BASE] (row of the halving passes' labels, -1 if none), ctl[C_HACC] (XOR of
    the labels of the 1 bits), the same for the second pass's row (C_BASE2/C_HACC2, if a
    halving pass reads it) and ctl[C_TOT] (parity of all bits)."""
    base = -1
    base2 = -1
    for p in range(1, pinfo.shape[1]):
        if pinfo[1, p] >= 0:
            if pinfo[0, p] == pinfo[0, 1]:
                base2 = pinfo[0, p]
            else:
                base = pinfo[0, p]
    ctl[C_BASE] = base
    ctl[C_BASE2] = base2
    tot = 0
    hacc = 0
    hacc2 = 0
    if base >= 0 and base2 >= 0:
        labels = inv[base]
        labels2 = inv[base2]
        for i in range(U(bits.shape[0])):  # branch-free: key bits are unpredictable
            m = -np.int64(bits[i])
            hacc ^= labels[i] & m
            hacc2 ^= labels2[i] & m
            tot ^= bits[i]
    elif base >= 0 or base2 >= 0:
        labels = inv[max(base, base2)]
        for i in range(U(bits.shape[0])):
            hacc ^= labels[i] & -np.int64(bits[i])
            tot ^= bits[i]
        if base < 0:
            hacc2 = hacc
            hacc = 0
    else:
        tot = _xor_bytes(bits, 0, bits.shape[0])
    ctl[C_HACC] = hacc
    ctl[C_HACC2] = hacc2
    ctl[C_TOT] = tot


@numba.njit(cache=True, nogil=True)
def prefix_parities_into(bits, perm, pinfo, out):
    """Alice's prefix parities per shuffled pass: out[p, q] = XOR of the bits at positions
    [0, q) of pass p (uint8[n_passes, n+1]; rows of halving passes are left as they are)."""
    n = bits.shape[0]
    for p in range(pinfo.shape[1]):
        if pinfo[1, p] >= 0:
            continue
        acc = np.uint8(0)
        out[p, 0] = 0
        if pinfo[0, p] < 0:
            for q in range(n):
                acc ^= bits[q]
                out[p, q + 1] = acc
        else:
            r = pinfo[0, p]
            for q in range(n):
                acc ^= bits[U(perm[r, q])]
                out[p, q + 1] = acc


@numba.njit(cache=True, nogil=True)
def prefix_parities(bits, perm, pinfo):
    out = np.empty((pinfo.shape[1], bits.shape[0] + 1), dtype=np.uint8)
    prefix_parities_into(bits, perm, pinfo, out)
    return out


@numba.njit(cache=True, nogil=True)
def reorder_into(bits, order, out):
    """Frame order -> first-pass order: out[q] = bits[order[q]]."""
    for q in range(U(bits.shape[0])):
        out[q] = bits[U(order[q])]


@numba.njit(cache=True, nogil=True)
def reorder(bits, order):
    out = np.empty_like(bits)
    reorder_into(bits, order, out)
    return out


@numba.njit(cache=True, nogil=True)
def restore_order(bits, order):
    """First-pass order -> frame order (inverse of ``reorder``)."""
    out = np.empty_like(bits)
    for q in range(U(bits.shape[0])):
        out[U(order[q])] = bits[q]
    return out


@numba.njit(cache=True, nogil=True)
def alice_answer(bits, perm, pinfo, sizes, offs, prefix, actl, new_pass, queries, n_queries,
                 out):
    """Alice's reply: the block parities of ``new_pass`` (if >= 0; block 0 left out for a
    pass after the first if actl[C_OMIT]), then one bit per query.

    queries: int64[*, 3] rows (pass, lo, hi), a query asks the parity of positions [lo, hi)
    of that pass. ``actl`` holds Alice's C_HACC/C_TOT (from ``label_parity``). Writes uint8
    0/1 into ``out`` and returns the number of bits written.
    """
    n = bits.shape[0]
    w = 0
    if new_pass >= 0:
        first = 1 if new_pass > 0 and actl[C_OMIT] else 0
        if pinfo[1, new_pass] >= 0:
            w = _block_parities(bits, perm, pinfo, sizes, offs, new_pass, actl, out, w, first)
        else:
            k = sizes[new_pass]
            for b in range(first, offs[new_pass + 1] - offs[new_pass]):
                out[w] = prefix[new_pass, min(b * k + k, n)] ^ prefix[new_pass, b * k]
                w += 1
    for i in range(n_queries):
        p = queries[i, 0]
        if pinfo[1, p] >= 0:
            out[w] = _range_parity(bits, perm, pinfo, sizes, p, queries[i, 1], queries[i, 2])
        else:
            out[w] = prefix[p, queries[i, 2]] ^ prefix[p, queries[i, 1]]
        w += 1
    return w


@numba.njit(cache=True, nogil=True, inline="always")
def _add_candidate(u8, st, ctl, block):
    if u8[U_CAND, block] == 0:
        u8[U_CAND, block] = 1
        st[S_CAND, ctl[C_NCAND]] = block
        ctl[C_NCAND] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _flip(bits, bp, inv, pinfo, sizes, offs, u8, node, st, ctl, pos):
    """Correct bit ``pos``: in every started pass, each known range holding it toggles its
    parity difference (the block's in ``u8``, a known left half's in bit 2 of ``node``)."""
    n = bits.shape[0]
    bits[pos] ^= 1
    ctl[C_FLIPS] += 1
    ctl[C_TOT] ^= 1
    if ctl[C_BASE] >= 0:
        ctl[C_HACC] ^= inv[ctl[C_BASE], pos]
    if ctl[C_BASE2] >= 0:
        ctl[C_HACC2] ^= inv[ctl[C_BASE2], pos]
    for p in range(ctl[C_CUR] + 1):
        q = _q_of(inv, pinfo, sizes, p, pos)
        if pinfo[0, p] >= 0 and pinfo[1, p] < 0:
            bp[pinfo[0, p], q] ^= 1
        k = sizes[p]
        b = q // k
        block = offs[p] + b
        u8[U_DIFF, block] ^= 1
        st[S_VER, block] += 1
        lo = b * k
        hi = min(lo + k, n)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            v = node[p, mid]
            if v & 1 == 0:
                break
            if q < mid:
                node[p, mid] = v ^ NODE_DIFF
                hi = mid
            else:
                lo = mid
        _add_candidate(u8, st, ctl, block)


@numba.njit(cache=True, nogil=True, inline="always")
def _pass_of_block(offs, block):
    p = 0
    while offs[p + 1] <= block:
        p += 1
    return p


@numba.njit(cache=True, nogil=True, inline="always")
def _node_diff(node, u8, block, p, lo_block, hi_block, lo, hi):
    """Parity difference (Alice XOR Bob) of the known range [lo, hi) of a block's split tree."""
    d = u8[U_DIFF, block]
    a = lo_block
    b = hi_block
    while a != lo or b != hi:
        mid = (a + b) // 2
        dl = (node[p, mid] >> 2) & 1
        if lo < mid:
            b = mid
            d = dl
        else:
            a = mid
            d ^= dl
    return d


@numba.njit(cache=True, nogil=True, inline="always")
def _smallest_odd_range(node, u8, block, p, lo_block, hi_block, stack):
    """Shortest known range of the block with an odd parity difference, or (-1, -1)."""
    best_lo = -1
    best_hi = -1
    stack[0, 0] = lo_block
    stack[1, 0] = hi_block
    stack[2, 0] = u8[U_DIFF, block]
    top = 1
    while top > 0:
        top -= 1
        lo = stack[0, top]
        hi = stack[1, top]
        d = stack[2, top]
        if d and (best_lo < 0 or hi - lo < best_hi - best_lo):
            best_lo = lo
            best_hi = hi
        if hi - lo > 1:
            mid = (lo + hi) // 2
            v = node[p, mid]
            if v & 1:
                dl = (v >> 2) & 1
                stack[0, top] = lo
                stack[1, top] = mid
                stack[2, top] = dl
                stack[0, top + 1] = mid
                stack[1, top + 1] = hi
                stack[2, top + 1] = d ^ dl
                top += 2
    return best_lo, best_hi


@numba.njit(cache=True, nogil=True)
def bob_round(bits, bp, perm, inv, pinfo, sizes, offs, u8, node, st, ctl, answers, n_answers,
              queries):
    """One round of Bob: consume Alice's answers to the previous request, emit the next one.

    Returns (n_queries, new_pass): queries[:n_queries] hold (pass, lo, hi) rows and
    new_pass >= 0 asks for every top-level block parity of that pass. (0, -1) means finished
    (ctl[C_DONE] == 1) or given up on contradictory answers (ctl[C_DONE] == 2).
    ``bits`` (Bob's key, uint8 0/1) is corrected in place; ``bp`` (uint8[n_rows, n]) holds
    his bits in the order of each shuffled pass once it started.
    """
    n = bits.shape[0]
    n_passes = sizes.shape[0]
    ctl[C_DISCLOSED] += n_answers
    stack = st[S_STACK:S_STACK + 3]
    w = 0
    # (a) top-level parities of a newly started pass
    req = ctl[C_REQ]
    if req >= 0:
        ctl[C_CUR] = req
        ctl[C_REQ] = -1
        n_blocks = offs[req + 1] - offs[req]
        mine = np.empty(n_blocks, dtype=np.uint8)
        row = pinfo[0, req]
        if row >= 0 and pinfo[1, req] < 0:
            x = bp[row]
            for q in range(U(n)):
                x[q] = bits[U(perm[row, q])]
            k = sizes[req]
            for b in range(n_blocks):
                mine[b] = _xor_bytes(x, b * k, min(b * k + k, n))
        else:
            _block_parities(bits, perm, pinfo, sizes, offs, req, ctl, mine, 0, 0)
        first = 1 if req > 0 and ctl[C_OMIT] else 0
        a0 = 0
        if first:
            # Alice's block 0 parity: her total parity XOR that of her other blocks
            a0 = ctl[C_ATOT]
            for b in range(1, n_blocks):
                a0 ^= answers[w + b - 1]
        for b in range(n_blocks):
            block = offs[req] + b
            if b < first:
                a = np.uint8(a0)
            else:
                a = answers[w]
                w += 1
            if req == 0:
                ctl[C_ATOT] ^= a
            u8[U_APAR, block] = a
            u8[U_DIFF, block] = a ^ mine[b]
            if u8[U_DIFF, block]:
                _add_candidate(u8, st, ctl, block)
    # (b) record the answers to the binary-search questions, in the order they were asked
    for s in range(ctl[C_NSEARCH]):
        if st[S_PENDING, s] == 0:
            continue
        st[S_PENDING, s] = 0
        a_left = answers[w]
        w += 1
        p = st[S_PASS, s]
        lo = st[S_LO, s]
        mid = (lo + st[S_HI, s]) // 2
        d_left = a_left ^ _bob_range_parity(bits, bp, perm, pinfo, sizes, p, lo, mid)
        node[p, mid] = NODE_KNOWN | (a_left << 1) | (d_left << 2)
    # (c) start searches on odd ranges; walk every search of the lowest pass down its known
    # ranges, correct a bit where one is pinned down, ask about the next unknown split
    nq = 0
    while True:
        if ctl[C_FLIPS] > n:
            # more corrections than bits: the answers contradict each other
            ctl[C_DONE] = 2
            return 0, -1
        keep = 0
        for s in range(ctl[C_NSEARCH]):
            if st[S_PASS, s] >= 0:
                if keep != s:
                    for r in range(S_CAND):
                        st[r, keep] = st[r, s]
                keep += 1
        ctl[C_NSEARCH] = keep
        n_cand = ctl[C_NCAND]
        ctl[C_NCAND] = 0
        for c in range(n_cand):
            block = st[S_CAND, c]
            u8[U_CAND, block] = 0
            if u8[U_BUSY, block]:
                continue
            p = _pass_of_block(offs, block)
            lo_block = (block - offs[p]) * sizes[p]
            hi_block = min(lo_block + sizes[p], n)
            lo, hi = _smallest_odd_range(node, u8, block, p, lo_block, hi_block, stack)
            if lo < 0:
                continue
            s = ctl[C_NSEARCH]
            ctl[C_NSEARCH] += 1
            u8[U_BUSY, block] = 1
            st[S_PASS, s] = p
            st[S_LO, s] = lo
            st[S_HI, s] = hi
            st[S_BLOCK, s] = block
            st[S_PENDING, s] = 0
            st[S_SEEN, s] = st[S_VER, block]
        if ctl[C_NSEARCH] == 0:
            break
        low_pass = n_passes
        for s in range(ctl[C_NSEARCH]):
            low_pass = min(low_pass, st[S_PASS, s])
        changed = False
        for s in range(ctl[C_NSEARCH]):
            p = st[S_PASS, s]
            if p != low_pass or (ctl[C_MAXQ] > 0 and nq >= ctl[C_MAXQ]):
                continue
            block = st[S_BLOCK, s]
            lo_block = (block - offs[p]) * sizes[p]
            hi_block = min(lo_block + sizes[p], n)
            lo = st[S_LO, s]
            hi = st[S_HI, s]
            if (st[S_SEEN, s] != st[S_VER, block]
                    and _node_diff(node, u8, block, p, lo_block, hi_block, lo, hi) == 0):
                # evened out by another correction: drop it, the block is looked at again
                st[S_PASS, s] = -1
            else:
                st[S_SEEN, s] = st[S_VER, block]
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    v = node[p, mid]
                    if v & NODE_KNOWN == 0:
                        break
                    if v & NODE_DIFF:
                        hi = mid
                    else:
                        lo = mid
                if hi - lo == 1:
                    _flip(bits, bp, inv, pinfo, sizes, offs, u8, node, st, ctl,
                          _pos_at(perm, pinfo, sizes, p, lo))
                    st[S_PASS, s] = -1
                else:
                    st[S_LO, s] = lo
                    st[S_HI, s] = hi
                    st[S_PENDING, s] = 1
                    queries[nq, 0] = p
                    queries[nq, 1] = lo
                    queries[nq, 2] = (lo + hi) // 2
                    nq += 1
            if st[S_PASS, s] < 0:
                changed = True
                u8[U_BUSY, block] = 0
                _add_candidate(u8, st, ctl, block)
        if nq > 0 or not changed:
            break
    if ctl[C_FLIPS] > n:
        ctl[C_DONE] = 2
        return 0, -1
    if nq > 0:
        ctl[C_ROUNDS] += 1
        return nq, -1
    # (d) nothing left to search: start the next pass or finish
    if ctl[C_CUR] + 1 < n_passes:
        ctl[C_REQ] = ctl[C_CUR] + 1
        ctl[C_ROUNDS] += 1
        return 0, ctl[C_REQ]
    ctl[C_DONE] = 1
    return 0, -1


def new_bob_states(bits: np.ndarray, perm: np.ndarray, inv: np.ndarray, pinfo: np.ndarray,
                   sizes: np.ndarray, offs: np.ndarray, empty=np.empty):
    """Bob's state for F frames of one layout, stacked on a leading frame axis:
    (bp, u8, node, st, ctl, queries) for ``bits`` uint8[F, n] (first-pass order).
    ``empty(shape, dtype)`` allocates (``buffers.Arena.empty`` reuses memory); arrays that
    must start at zero are zeroed here, ``bp`` is written before it is read. ``queries`` is
    flat (F * n_blocks rows): ``bob_round_frames`` packs every frame's questions in it."""
    n_frames, n_bits = bits.shape
    n_blocks = int(offs[-1])
    bp = empty((n_frames,) + perm.shape, np.uint8)
    u8 = empty((n_frames, N_U8, n_blocks), np.uint8)
    node = empty((n_frames, sizes.shape[0], n_bits), np.uint8)
    st = empty((n_frames, N_ST, max(n_blocks, MIN_ST_COLUMNS)), np.int64)
    for a in (u8, node, st):
        a.fill(0)
    ctl = np.zeros((n_frames, N_CTL), dtype=np.int64)
    ctl[:, C_CUR] = -1
    ctl[:, C_REQ] = -1
    for f in range(n_frames):
        label_parity(bits[f], inv, pinfo, ctl[f])
    queries = empty((n_frames * n_blocks, 3), np.int64)
    return bp, u8, node, st, ctl, queries


@numba.njit(cache=True, nogil=True)
def bob_round_frames(bits, bp, perm, inv, pinfo, sizes, offs, u8, node, st, ctl, answers,
                     got, expect, queries, n_queries, new_pass):
    """``bob_round`` for every unfinished frame of one layout (state stacked on axis 0);
    frame f's answers are the next expect[f] bits of ``answers``. Writes each frame's
    question count and new pass into ``n_queries``/``new_pass`` (0, -1 when finished), the
    number of answer bits its request will get into ``expect``, and the questions of all
    frames one after the other into ``queries`` (at least F * n_blocks rows; a frame asks at
    most one question per block). Returns (status, question rows written, frames not
    finished, answer bits the next reply must hold).

    ``got`` is the reply's answer count per frame: first, with nothing changed, status -2 if
    ``answers`` does not hold their sum, f >= 0 if frame f's count is not expect[f]; -1 when
    the reply fits and the round ran."""
    total = 0
    for f in range(bits.shape[0]):
        total += got[f]
    if total != answers.shape[0]:
        return -2, 0, 0, 0
    for f in range(bits.shape[0]):
        if got[f] != expect[f]:
            return f, 0, 0, 0
    a0 = 0
    w = 0
    active = 0
    total = 0
    n_blocks = offs[-1]
    for f in range(bits.shape[0]):
        a1 = a0 + expect[f]
        n_queries[f] = 0
        new_pass[f] = -1
        expect[f] = 0
        if ctl[f, C_DONE] == 0:
            nq, np_ = bob_round(bits[f], bp[f], perm, inv, pinfo, sizes, offs, u8[f], node[f],
                                st[f], ctl[f], answers[a0:a1], a1 - a0,
                                queries[w:w + n_blocks])
            n_queries[f] = nq
            new_pass[f] = np_
            expect[f] = nq + pass_answer_bits(offs, np_, ctl[f, C_OMIT])
            w += nq
            total += expect[f]
            if ctl[f, C_DONE] == 0:
                active += 1
        a0 = a1
    return -1, w, active, total


@numba.njit(cache=True, nogil=True)
def check_questions(new_pass, counts, ranges, lengths, n_passes):
    """First frame whose questions fall outside its session, or -1: a new pass outside
    [-1, n_passes), or a range with a pass outside [0, n_passes) or not 0 <= lo < hi <= n."""
    r = 0
    for f in range(new_pass.shape[0]):
        if new_pass[f] < -1 or new_pass[f] >= n_passes:
            return f
        for i in range(r, r + counts[f]):
            if (ranges[i, 0] < 0 or ranges[i, 0] >= n_passes or ranges[i, 1] < 0
                    or ranges[i, 1] >= ranges[i, 2] or ranges[i, 2] > lengths[f]):
                return f
        r += counts[f]
    return -1


@numba.njit(cache=True, nogil=True)
def pass_answer_bits(offs, p, omit):
    """Block parities Alice sends when pass p (-1: none) starts: its block count, less block 0
    for a pass after the first when ``omit``."""
    if p < 0:
        return 0
    return offs[p + 1] - offs[p] - (1 if p > 0 and omit else 0)


@numba.njit(cache=True, nogil=True)
def answer_counts(offs, new_pass, counts, omit):
    """Answer bits per frame: the block parities of its new pass plus one per range."""
    out = np.empty(new_pass.shape[0], dtype=np.int64)
    for f in range(new_pass.shape[0]):
        out[f] = counts[f] + pass_answer_bits(offs, new_pass[f], omit)
    return out


@numba.njit(cache=True, nogil=True)
def stack_questions(queries, n_queries):
    """The first n_queries[f] rows of queries[f] for every frame, one after the other."""
    out = np.empty((n_queries.sum(), 3), dtype=np.int64)
    w = 0
    for f in range(queries.shape[0]):
        for i in range(n_queries[f]):
            out[w, 0] = queries[f, i, 0]
            out[w, 1] = queries[f, i, 1]
            out[w, 2] = queries[f, i, 2]
            w += 1
    return out


@numba.njit(cache=True, nogil=True)
def alice_answer_frames(bits, perm, pinfo, sizes, offs, prefix, actl, new_pass, ranges,
                        counts, out):
    """``alice_answer`` for F frames of one layout (bits, prefix, actl stacked on axis 0):
    frame f's questions are the next counts[f] rows of ``ranges``; its answers go to the next
    bits of ``out``. Returns the number of bits written per frame (int64[F])."""
    written = np.zeros(bits.shape[0], dtype=np.int64)
    r = 0
    w = 0
    for f in range(bits.shape[0]):
        m = counts[f]
        got = alice_answer(bits[f], perm, pinfo, sizes, offs, prefix[f], actl[f], new_pass[f],
                           ranges[r:r + m], m, out[w:])
        written[f] = got
        r += m
        w += got
    return written


@numba.njit(cache=True, nogil=True)
def alice_reply_frames(bits, perm, pinfo, sizes, offs, prefix, actl, new_pass, ranges, counts,
                       lengths, omit):
    """Alice's whole reply to a request when every frame has one layout: checks the
    questions against the session first (nothing is answered if one does not fit), then
    answers them. Returns (status, answer bits per frame int64[F], the answers uint8 0/1 of
    all frames one after the other); status -1 = answered, -2 = the range counts do not add
    up to the rows of ``ranges``, f >= 0 = frame f has a negative range count or a question
    outside its session (``check_questions``)."""
    n_frames = bits.shape[0]
    total = 0
    for f in range(n_frames):
        if counts[f] < 0:
            return f, np.zeros(n_frames, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        total += counts[f]
    if total != ranges.shape[0]:
        return -2, np.zeros(n_frames, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    bad = check_questions(new_pass, counts, ranges, lengths, sizes.shape[0])
    if bad >= 0:
        return bad, np.zeros(n_frames, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    n_answers = answer_counts(offs, new_pass, counts, omit)
    out = np.empty(n_answers.sum(), dtype=np.uint8)
    alice_answer_frames(bits, perm, pinfo, sizes, offs, prefix, actl, new_pass, ranges, counts,
                        out)
    return -1, n_answers, out


def fused_workspace_size(n_bits: int, n_passes: int, n_rows: int, n_blocks: int):
    """Lengths of the (uint8, int64) scratch buffers ``cascade_fused`` needs."""
    u8_len = (n_passes * (n_bits + 1) + n_rows * n_bits + n_passes * n_bits + 2 * n_bits
              + N_U8 * n_blocks + 2 * n_blocks)
    i64_len = N_ST * max(n_blocks, MIN_ST_COLUMNS) + 3 * n_blocks
    return u8_len, i64_len


@numba.njit(cache=True, nogil=True)
def cascade_fused(alice_bits, bob_bits, order, perm, inv, pinfo, sizes, offs, max_questions,
                  omit, ubuf, ibuf):
    """Both roles in one kernel: returns (Bob's corrected bits, disclosed bits, round trips,
    status) with status 1 = finished, 2 = gave up on contradictory answers. Keys in and out
    are in frame order; ``omit`` is the schedule's C_OMIT (0/1); ``ubuf``/``ibuf`` are
    scratch (uint8/int64, ``fused_workspace_size``), reused across frames so that no fresh
    pages are touched per frame.

    Same ``bob_round``/``alice_answer`` calls as the two-role path, without message objects;
    each role does its own work (no parity is shared between them).
    """
    n_blocks = offs[-1]
    n = bob_bits.shape[0]
    n_passes = sizes.shape[0]
    n_rows = perm.shape[0]
    w = 0
    prefix = ubuf[w:w + n_passes * (n + 1)].reshape((n_passes, n + 1))
    w += n_passes * (n + 1)
    bp = ubuf[w:w + n_rows * n].reshape((n_rows, n))
    w += n_rows * n
    node = ubuf[w:w + n_passes * n].reshape((n_passes, n))
    w += n_passes * n
    alice = ubuf[w:w + n]
    w += n
    bits = ubuf[w:w + n]
    w += n
    u8 = ubuf[w:w + N_U8 * n_blocks].reshape((N_U8, n_blocks))
    w += N_U8 * n_blocks
    answers = ubuf[w:w + 2 * n_blocks]
    st_cols = max(n_blocks, MIN_ST_COLUMNS)
    st = ibuf[:N_ST * st_cols].reshape((N_ST, st_cols))
    queries = ibuf[N_ST * st_cols:N_ST * st_cols + 3 * n_blocks].reshape((n_blocks, 3))
    node[:] = 0
    u8[:] = 0
    reorder_into(alice_bits, order, alice)
    reorder_into(bob_bits, order, bits)
    prefix_parities_into(alice, perm, pinfo, prefix)
    actl = np.zeros(N_CTL, dtype=np.int64)
    actl[C_OMIT] = omit
    label_parity(alice, inv, pinfo, actl)
    ctl = np.zeros(N_CTL, dtype=np.int64)
    ctl[C_CUR] = -1
    ctl[C_REQ] = -1
    ctl[C_MAXQ] = max_questions
    ctl[C_OMIT] = omit
    label_parity(bits, inv, pinfo, ctl)
    n_answers = 0
    while True:
        nq, new_pass = bob_round(bits, bp, perm, inv, pinfo, sizes, offs, u8, node, st, ctl,
                                 answers, n_answers, queries)
        if nq == 0 and new_pass < 0:
            break
        n_answers = alice_answer(alice, perm, pinfo, sizes, offs, prefix, actl, new_pass,
                                 queries[:nq], nq, answers)
    return restore_order(bits, order), ctl[C_DISCLOSED], ctl[C_ROUNDS], ctl[C_DONE]
