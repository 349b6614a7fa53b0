"""Errors of sifting: bad local input, and malformed or mismatched peer messages."""


class SiftError(ValueError):
    """Sifting input that cannot be processed (wrong dtype, unsorted slots, bad pattern bytes)."""


class SiftMessageError(SiftError):
    """A sifting message that is malformed or does not belong to the exchange it is used in."""
