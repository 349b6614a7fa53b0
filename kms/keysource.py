"""Quantum keys from the site's node, through the key-service client only.

Each business service is its own SAE at the node (``<site SAE>.<service>``), with its own CURVE
keypair on the node's allow-list. The node then enforces isolation itself: a key drawn with
``enc_keys`` for slave ``kms-b.cargo`` can be fetched at site B only by ``kms-b.cargo``; the
waybills SAE asking for it is refused (401) by the node, not only by this server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from daemon.keyservice.client import Key, KeyClient, KeyServiceError, KeyServiceTimeout
from kms.errors import NoKeyAvailable, UnknownName


@dataclass(frozen=True)
class SaeCredentials:
    public_key: bytes
    secret_key: bytes


def sae_id(site_sae: str, service: str) -> str:
    return f"{site_sae}.{service}"


class NodeKeySource:
    """Draw keys for a service at this site (master) or fetch by ID what the peer drew."""

    def __init__(self, endpoint: str, server_public_key: bytes, site_sae: str, peer_sae: str,
                 credentials: dict[str, SaeCredentials], *, timeout_s: float = 2.0,
                 retries: int = 2, max_per_request: int = 128, context=None):
        self.endpoint = endpoint
        self.site_sae, self.peer_sae = site_sae, peer_sae
        self.max_per_request = max_per_request
        self._clients = {
            svc: KeyClient(endpoint, server_public_key=server_public_key,
                           public_key=c.public_key, secret_key=c.secret_key,
                           timeout_s=timeout_s, retries=retries, context=context)
            for svc, c in credentials.items()}

    def _client(self, service: str) -> KeyClient:
        try:
            return self._clients[service]
        except KeyError:
            raise UnknownName(f"no node credentials for service {service!r}; configured: "
                              f"{', '.join(sorted(self._clients))}") from None

    def draw(self, service: str, number: int, size_bits: int) -> list[Key]:
        """enc_keys at this site's node for the peer site's SAE of the same service."""
        client, out = self._client(service), []
        try:
            while len(out) < number:
                n = min(self.max_per_request, number - len(out))
                out += client.enc_keys(sae_id(self.peer_sae, service), number=n, size=size_bits)
        except KeyServiceError as exc:
            if out:
                return out
            raise NoKeyAvailable(f"node at {self.endpoint} gave no key for {service!r}: "
                                 f"{exc.status} {exc.message}") from None
        except KeyServiceTimeout:
            if out:
                return out
            raise NoKeyAvailable(f"node key service at {self.endpoint} did not answer") from None
        return out

    def fetch(self, service: str, key_ids: list[uuid.UUID]) -> list[Key]:
        """dec_keys at this site's node: the keys the peer site's same service drew."""
        try:
            return self._client(service).dec_keys(sae_id(self.peer_sae, service), key_ids)
        except KeyServiceError as exc:
            if exc.status in (400, 401):
                # 401: the node says these keys were drawn for another service's SAE. Say the
                # same as for an unknown ID, so a service learns nothing about another's keys.
                raise UnknownName(f"key ID not in the {service!r} pool") from None
            raise NoKeyAvailable(f"node at {self.endpoint}: {exc.status} {exc.message}") from None
        except KeyServiceTimeout:
            raise NoKeyAvailable(f"node key service at {self.endpoint} did not answer") from None

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


@dataclass
class SiteNode:
    """One site's node as a KMS reaches it: endpoint, server key, SAE prefixes, keypairs."""

    endpoint: str
    public_key: bytes
    site_sae: str
    peer_sae: str
    credentials: dict[str, SaeCredentials]

    def source(self, **kw) -> NodeKeySource:
        return NodeKeySource(self.endpoint, self.public_key, self.site_sae, self.peer_sae,
                             self.credentials, **kw)
