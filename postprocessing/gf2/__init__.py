"""Arithmetic on GF(2) polynomials held in packed 64-bit words.

Layout everywhere in this package: bit k of a polynomial (the coefficient of z^k) is bit
``k % 64`` (LSB = 0) of word ``k // 64`` of a uint64 array ("little-endian bit order"), which is
``np.packbits(bits, bitorder="little").view("<u8")`` of an unpacked 0/1 array.

Modules: ``clmul`` (64x64 carry-less multiply: pclmulqdq, 512-bit vpclmulqdq rows, software
fallback; word xor/copy kernels), ``toeplitz`` (Toeplitz matrix-vector products by transposed
Karatsuba, used by privacy amplification), ``field64`` (GF(2^64) multiply and polynomial hashing,
used by verification and later by Wegman-Carter authentication).
"""
