"""Typed errors of the KMS and the platform; each message is one line a technician can act on.

Every error carries an HTTP-like ``status`` (400 malformed, 401 not allowed, 403 refused by
policy, 404 unknown, 409 already used, 503 no key available) so the socket layer and the CLI
report it the same way. Messages never contain key material.
"""

from __future__ import annotations


class KmsError(Exception):
    status = 500

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class MalformedRequest(KmsError):
    status = 400


class NotAuthorized(KmsError):
    status = 401


class PolicyRefused(KmsError):
    status = 403


class UnknownName(KmsError):
    status = 404


class AlreadyUsed(KmsError):
    status = 409


class NoKeyAvailable(KmsError):
    status = 503


class ConfigError(KmsError):
    """site.toml is wrong: the message names the file, the key and what is accepted."""
    status = 400
