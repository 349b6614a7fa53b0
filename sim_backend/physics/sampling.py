"""Event-driven sampling: cost grows with the clicks, not with the pulses.

Clicks are drawn by thinning: candidate slots come at geometric gaps for an upper-bound click
probability ``p_max``; at each candidate the exact probability of the slot's pattern byte is
looked up and the candidate kept with probability p / p_max. This is exact for independent
Bernoulli slots and never touches the slots in between.

Randomness inside the kernels comes from a sequential splitmix64 stream whose state is a
``uint64[1]`` array owned by the caller (no global RNG state, reproducible from a seed).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from sim_backend.pattern import splitmix64

_INV_2_53 = 1.0 / 9007199254740992.0


@nb.njit(cache=True, nogil=True, inline="always")
def next_u64(state):
    """Next output of the splitmix64 stream held in ``state`` (uint64[1], advanced in place)."""
    state[0] = state[0] + np.uint64(1)
    return splitmix64(state[0] * np.uint64(0x9E3779B97F4A7C15))


@nb.njit(cache=True, nogil=True, inline="always")
def uniform_open(state):
    """Uniform float64 in (0, 1): 53 random bits, offset by half a step so 0 never occurs."""
    return (float(next_u64(state) >> np.uint64(11)) + 0.5) * _INV_2_53


@nb.njit(cache=True, nogil=True)
def geometric_slots(last_slot, stop_slot, p, state, out):
    """Bernoulli(p) successes in slots (last_slot, stop_slot), in order, into ``out`` (int64[]).

    Returns (count, last, done): when ``out`` fills before ``stop_slot``, call again from
    ``last`` (the process is memoryless, so resuming is exact).
    """
    n = 0
    pos = last_slot
    if p <= 0.0:
        return 0, stop_slot, True
    log_q = math.log1p(-p) if p < 1.0 else -math.inf
    while n < out.size:
        if p >= 1.0:
            gap = 1.0
        else:
            gap = 1.0 + math.floor(math.log(uniform_open(state)) / log_q)
        if gap >= stop_slot - pos:
            return n, stop_slot, True
        pos += np.int64(gap)
        out[n] = pos
        n += 1
    return n, pos, False


def bernoulli_slots(first_slot: int, stop_slot: int, p: float, state: np.ndarray) -> np.ndarray:
    """All successes of Bernoulli(p) trials on slots [first_slot, stop_slot), int64 ascending."""
    n_slots = stop_slot - first_slot
    mean = n_slots * min(max(p, 0.0), 1.0)
    cap = int(mean + 8.0 * math.sqrt(mean) + 256)
    parts = []
    last = first_slot - 1
    while True:
        buf = np.empty(cap, dtype=np.int64)
        n, last, done = geometric_slots(np.int64(last), np.int64(stop_slot), float(p), state, buf)
        parts.append(buf[:n])
        if done:
            break
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@nb.njit(cache=True, nogil=True, inline="always")
def _truncated_poisson(m, state):
    """A Poisson(m) count conditioned on >= 1 (inversion of the cumulative sum)."""
    target = uniform_open(state) * -math.expm1(-m)
    term = math.exp(-m) * m
    acc = term
    k = 1
    while acc < target and k < 10000:
        k += 1
        term *= m / k
        acc += term
    return k


@nb.njit(cache=True, nogil=True, inline="always")
def _truncated_binomial(n, p, state):
    """A Binomial(n, p) count conditioned on >= 1 (inversion); n = 1 draws nothing."""
    if n == 1:
        return 1
    if p >= 1.0:
        return n
    q = 1.0 - p
    target = uniform_open(state) * -math.expm1(n * math.log1p(-p))
    # P(k) = C(n, k) p^k q^(n-k), built up from P(1) = n p q^(n-1)
    term = n * p * q ** (n - 1)
    acc = term
    k = 1
    while acc < target and k < n:
        term *= (n - k) / (k + 1) * p / q
        k += 1
        acc += term
    return k


@nb.njit(cache=True, nogil=True)
def photon_clicks(cand_slots, cand_pattern, p_max, outcome_cum, detector_cum, mean_detected,
                  eve_kind, bright_mask, eve_photons, eve_mean, eve_detect, state, out_slots,
                  out_dets, out_eve):
    """Thin candidates into photon clicks; returns how many (slot, detector) rows were written.

    cand_slots int64[n] ascending; cand_pattern uint8[n] (pattern byte of each candidate);
    outcome_cum float64[16, 5]: cumulative click probability of the outcomes of a slot
    (0 = unattacked pulse, 1..4 = Eve resends H, V, D, A); detector_cum float64[16, 5, 4]:
    cumulative per-detector weights given that outcome; mean_detected float64[16]: mean number
    of detected photons of an unattacked pulse. Eve's light: eve_kind 1 = a Fock state of
    ``eve_photons`` photons, 3 = a coherent pulse of mean ``eve_mean`` photons (each photon
    reaching a detector with probability eve_detect[outcome], split by detector_cum), 2 = a
    bright pulse clicking the detectors in bright_mask uint8[5] (bit k = detector k).
    out_eve[row] = 1 where the row comes from light Eve sent (she knows Alice's value there).
    out_* need room for 4 rows per candidate.
    """
    n = 0
    for i in range(cand_slots.size):
        b = cand_pattern[i]
        u = uniform_open(state) * p_max
        if u >= outcome_cum[b, 4]:
            continue
        o = 0
        while u >= outcome_cum[b, o]:
            o += 1
        mask = 0
        k_photons = 0
        if o == 0:
            # Multi-photon pulse, given >= 1 detected photon: zero-truncated Poisson total,
            # each photon to a detector by its weight (Poisson splitting is exact).
            k_photons = _truncated_poisson(mean_detected[b], state)
        elif eve_kind == 1:
            # n photons, each detected independently: a zero-truncated binomial total.
            k_photons = _truncated_binomial(eve_photons, eve_detect[o], state)
        elif eve_kind == 3:
            k_photons = _truncated_poisson(eve_mean * eve_detect[o], state)
        else:
            mask = bright_mask[o]
        for _ in range(k_photons):
            v = uniform_open(state)
            d = 0
            while d < 3 and v >= detector_cum[b, o, d]:
                d += 1
            mask |= 1 << d
        for d in range(4):
            if mask & (1 << d):
                out_slots[n] = cand_slots[i]
                out_dets[n] = d
                out_eve[n] = o > 0
                n += 1
    return n


AFTERPULSE_QUEUE = 16
"""Pending afterpulses kept per detector; beyond that the latest is dropped (P^16: never)."""


@nb.njit(cache=True, nogil=True, inline="always")
def _earliest_pending(pending, n_pending, stop_slot):
    """(slot, detector, queue index) of the earliest queued afterpulse; (stop_slot, -1, -1)
    when none is queued before ``stop_slot``."""
    s_ap = stop_slot
    k_ap = -1
    j_ap = -1
    for k in range(pending.shape[0]):
        for j in range(n_pending[k]):
            if pending[k, j] < s_ap:
                s_ap = pending[k, j]
                k_ap = k
                j_ap = j
    return s_ap, k_ap, j_ap


@nb.njit(cache=True, nogil=True)
def dead_time_afterpulse(slots, dets, stop_slot, dead_slots, ap_probability, ap_mean_slots,
                         dead_until, pending, n_pending, state, out_slots, out_dets):
    """Sequential pass over raw clicks: drop those within a detector's dead time, add afterpulses.

    slots int64[n] ascending with dets uint8[n] (raw clicks, several detectors may share a slot);
    dead_slots int64[4]: slots blocked after a click (the click slot itself always is). State
    carried between chunks: dead_until int64[4] (first live slot of each detector), pending
    int64[4, AFTERPULSE_QUEUE] and n_pending int64[4] (afterpulses not yet due). A registered
    click (afterpulses included) is followed by an afterpulse with ``ap_probability``, at a
    delay after re-arming that is geometric with mean ``ap_mean_slots``; an afterpulse falling
    into a dead time is lost. Returns rows written, or -1 if ``out_*`` was too small.
    """
    n = 0
    i = 0
    n_in = slots.size
    log_q = math.log(ap_mean_slots / (ap_mean_slots + 1.0)) if ap_mean_slots > 0 else -math.inf
    # Earliest pending afterpulse (k_ap, j_ap) is cached; it changes only when one is added/used.
    s_ap, k_ap, j_ap = _earliest_pending(pending, n_pending, stop_slot)
    while True:
        if k_ap >= 0 and s_ap < stop_slot and (i >= n_in or s_ap < slots[i]):
            s = s_ap
            k = k_ap
            n_pending[k] -= 1
            pending[k, j_ap] = pending[k, n_pending[k]]
            s_ap, k_ap, j_ap = _earliest_pending(pending, n_pending, stop_slot)
        elif i < n_in:
            s = slots[i]
            k = np.int64(dets[i])
            i += 1
        else:
            break
        if s < dead_until[k]:
            continue
        if n >= out_slots.size:
            return -1
        out_slots[n] = s
        out_dets[n] = k
        n += 1
        dead_until[k] = s + 1 + dead_slots[k]
        if ap_probability > 0.0 and uniform_open(state) < ap_probability:
            delay = 0
            if ap_mean_slots > 0:
                delay = np.int64(math.floor(math.log(uniform_open(state)) / log_q))
            t = dead_until[k] + delay
            if n_pending[k] < pending.shape[1]:
                pending[k, n_pending[k]] = t
                if t < s_ap:
                    s_ap = t
                    k_ap = k
                    j_ap = n_pending[k]
                n_pending[k] += 1
    return n
