"""RSA moduli of two random equal-size primes, factored with FLINT, timed per size.

Library: python-flint (bindings to FLINT 3). ``fmpz.factor()`` runs trial division, Pollard
rho/ECM and then FLINT's self-initialising quadratic sieve -- the method of choice below about
100 digits, where every size we can afford lives. Chosen over the alternatives because it
installs from one ~10 MB abi3 wheel with nothing to compile; PARI (cypari2, 35 MB wheel) was as
fast at 160-176 bits in a trial here and slower at 192; sympy's pure-Python factorint is far
slower at these sizes. ``fmpz.is_prime`` (a proof, not a probable-prime test, at these sizes)
checks every prime we generate.

Primes come from a seeded ``random.Random`` (reproducibility matters here, secrecy does not:
these moduli exist to be broken). Top two bits set, so p q has exactly the requested size.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass, field

import flint


def random_prime(bits: int, rng: random.Random) -> int:
    """A prime of exactly ``bits`` bits with its two top bits set."""
    if bits < 4:
        raise ValueError(f"bits={bits!r} must be >= 4")
    while True:
        c = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        while c.bit_length() == bits:
            if flint.fmpz(c).is_prime():
                return c
            c += 2


@dataclass(frozen=True)
class Modulus:
    n: int
    p: int
    q: int


def rsa_modulus(bits: int, rng: random.Random) -> Modulus:
    """n = p q with p != q random primes of bits/2 bits each; n has exactly ``bits`` bits."""
    if bits % 2 or bits < 8:
        raise ValueError(f"bits={bits!r} must be an even number >= 8")
    while True:
        p, q = random_prime(bits // 2, rng), random_prime(bits // 2, rng)
        if p != q:
            return Modulus(p * q, min(p, q), max(p, q))


def factor(n: int) -> list[int]:
    """Prime factors of n with multiplicity, ascending."""
    out = []
    for prime, exp in flint.fmpz(n).factor():
        out.extend([int(prime)] * int(exp))
    return sorted(out)


@dataclass
class SizeTiming:
    bits: int
    count: int
    total_s: float
    mean_s: float
    median_s: float
    max_s: float
    factored: int            # moduli whose factors came back as (p, q)
    moduli: list = field(default_factory=list)   # (n, p, q) as decimal strings


def time_size(bits: int, count: int, rng: random.Random, keep_moduli: bool = True) -> SizeTiming:
    times, ok, kept = [], 0, []
    for _ in range(count):
        m = rsa_modulus(bits, rng)
        t0 = time.perf_counter()
        found = factor(m.n)
        times.append(time.perf_counter() - t0)
        ok += found == [m.p, m.q]
        if keep_moduli:
            kept.append((str(m.n), str(m.p), str(m.q)))
    return SizeTiming(bits, count, sum(times), statistics.fmean(times), statistics.median(times),
                      max(times), ok, kept)


def run(sizes, count: int, seed: int, log=print) -> list[SizeTiming]:
    rng = random.Random(seed)
    factor(rsa_modulus(64, random.Random(seed + 1)).n)        # load the library before timing
    out = []
    for bits in sizes:
        r = time_size(bits, count, rng)
        log(f"  {count} x {bits}-bit moduli: {r.total_s:.2f} s in all, {r.mean_s * 1e3:.1f} ms "
            f"mean, {r.factored}/{count} factored")
        out.append(r)
    return out


def to_dict(results: list[SizeTiming]) -> list[dict]:
    return [asdict(r) for r in results]
