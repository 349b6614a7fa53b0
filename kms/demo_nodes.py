"""Two running nodes' key services for ``qkd-kms demo --nodes FILE``.

The file names, per site, what a KMS needs to reach its node through the key-service client
and nothing else: the service's endpoint and server public key, the site's SAE prefix, and for
each business service the secret key file of that service's SAE (a ZeroMQ certificate, as
``qkd-node`` writes them; the node's ``[keyservice.clients]`` must allow its public key under
``<site SAE>.<service>`` and list the other site's SAEs in ``remote_saes``)::

    [site_a]                      # enc_keys here: site A's KMS and key cloud platform
    endpoint = "tcp://127.0.0.1:7400"
    server_public_key = "<40 Z85 characters>"     # or server_public_key_file = "..."
    sae = "kms-a"
    [site_a.clients]
    waybills = "/path/kms-a.waybills.key_secret"
    ...
    [site_b]                      # dec_keys here
    ...

Every error names the file, the key and what is accepted.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import zmq.auth
import zmq.utils.z85

from kms.errors import ConfigError
from kms.keysource import SaeCredentials, SiteNode

SITE_TABLES = ("site_a", "site_b")


def _text(table: dict, key: str, where: str) -> str:
    val = table.get(key)
    if not isinstance(val, str) or not val:
        raise ConfigError(f"{where}.{key}: expected a non-empty string")
    return val


def _public_key(table: dict, where: str) -> bytes:
    if "server_public_key" in table:
        raw = _text(table, "server_public_key", where).encode()
    else:
        path = _text(table, "server_public_key_file", where)
        try:
            raw, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError):
            raise ConfigError(f"{where}.server_public_key_file = {path!r}: not a readable "
                              "ZeroMQ certificate") from None
    try:
        ok = len(raw) == 40 and len(zmq.utils.z85.decode(raw)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{where}: server public key is not a CURVE key (40 Z85 characters)")
    return raw


def _credentials(table: dict, services, where: str) -> dict[str, SaeCredentials]:
    clients = table.get("clients")
    if not isinstance(clients, dict):
        raise ConfigError(f"{where}.clients: expected a table of service = secret key file")
    missing = [s for s in services if s not in clients]
    if missing:
        raise ConfigError(f"{where}.clients: no key file for service {missing[0]!r}; "
                          f"every service needs one: {', '.join(services)}")
    out = {}
    for service in services:
        path = clients[service]
        try:
            public, secret = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError, TypeError):
            public = secret = None
        if not public or not secret:
            raise ConfigError(f"{where}.clients.{service} = {path!r}: not a readable ZeroMQ "
                              "secret certificate (public and secret key)")
        out[service] = SaeCredentials(public, secret)
    return out


def load_nodes(path: str | Path, services) -> tuple[SiteNode, SiteNode]:
    """Site A's and site B's node as ``SiteNode``s, like the stand-in nodes give them."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    tables = []
    for name in SITE_TABLES:
        t = data.get(name)
        if not isinstance(t, dict):
            raise ConfigError(f"{path}: missing table [{name}]; expected [site_a] and [site_b]")
        tables.append(t)
    where = [f"{path} [{n}]" for n in SITE_TABLES]
    saes = [_text(t, "sae", w) for t, w in zip(tables, where)]
    if saes[0] == saes[1]:
        raise ConfigError(f"{path}: both sites have sae = {saes[0]!r}; they must differ")
    services = list(services)
    a, b = (SiteNode(_text(t, "endpoint", w), _public_key(t, w), saes[i], saes[1 - i],
                     _credentials(t, services, w))
            for i, (t, w) in enumerate(zip(tables, where)))
    return a, b
