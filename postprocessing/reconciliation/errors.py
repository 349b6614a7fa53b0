"""Typed errors of the Cascade reconciliation package (never carry key bits in messages)."""

from __future__ import annotations


class ReconciliationError(ValueError):
    """Bad argument to a Cascade function: the message names the value and the accepted range."""


class MessageError(ValueError):
    """A Cascade protocol message could not be decoded or does not fit the session state."""
