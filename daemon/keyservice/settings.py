"""The ``[keyservice]`` table of the node's TOML: its settings and how they are read.

Apart from the runner (``runner.py`` re-exports them) so that ``daemon/config.py`` can check
the table before the node starts without importing the service's sockets.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from daemon.keyservice.pool import MAX_RESERVE_AHEAD


@dataclasses.dataclass(frozen=True)
class KeyServiceSettings:
    """The ``[keyservice]`` table of the node's TOML, resolved (see ``parse_settings``)."""

    endpoint: str                       # e.g. tcp://0.0.0.0:7200
    link_id: str                        # the link whose keys it serves
    kme_id: str
    peer_kme_id: str
    public_key: bytes                   # the service's CURVE keypair, Z85
    secret_key: bytes = dataclasses.field(repr=False, default=b"")
    clients: dict = dataclasses.field(default_factory=dict)   # Z85 public key -> SAE ID
    remote_saes: frozenset[str] = frozenset()                 # SAEs at the peer node
    max_key_per_request: int = 128
    max_key_count: int = 100_000
    max_key_size: int | None = None     # bits, a whole number of stored keys (None: the most
                                        # that fits in 8192 bits)
    lease_batch: int = 1024
    reserve_ahead: int = 256            # keys per (master, slave) reserved at the peer ahead
    reservation_ttl_s: float = 3600.0   # a reserved key not fetched by then is erased
    settle_interval_s: float = 2.0
    reserve_timeout_s: float = 2.0
    reply_ttl_s: float = 60.0
    housekeeping_interval_s: float = 30.0    # VOID resend, reservation expiry


def _need(table: dict, key: str, kind, where: str):
    if key not in table:
        raise ValueError(f"{where}.{key} is missing")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}.{key} = {value!r}: expected {getattr(kind, '__name__', kind)}")
    return value


def _positive(table: dict, key: str, default, where: str):
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}.{key} = {value!r}: expected a positive number")
    if isinstance(default, int) and not isinstance(value, int):
        raise ValueError(f"{where}.{key} = {value!r}: expected a positive integer")
    return value


def _ahead(value, where: str) -> int:
    top = MAX_RESERVE_AHEAD
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"{where}.reserve_ahead = {value!r}: expected an integer in 0..{top}")
    return value


def parse_clients(entries, *, base_dir: Path, where: str = "keyservice.clients") -> dict:
    """``[[keyservice.clients]]`` entries -> {Z85 public key: SAE ID}; ValueError names the
    entry. Each entry has ``sae_id`` and either ``public_key`` (Z85 text) or
    ``public_key_file`` (a ZeroMQ certificate, relative to the config file)."""
    from daemon.curve_keys import KeyFileError, load_public_key

    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: expected at least one [[{where}]] entry (the service "
                         f"refuses to start without clients)")
    out: dict[bytes, str] = {}
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: expected a table")
        sae = _need(entry, "sae_id", str, at)
        if not re.fullmatch(r"[A-Za-z0-9._:@-]{1,64}", sae):
            raise ValueError(f"{at}.sae_id = {sae!r}: expected 1-64 of A-Z a-z 0-9 . _ : @ -")
        if "public_key" in entry:
            key = _need(entry, "public_key", str, at).encode()
            if len(key) != 40:
                raise ValueError(f"{at}.public_key: expected 40 Z85 characters")
        else:
            path = Path(_need(entry, "public_key_file", str, at))
            try:
                key = load_public_key(path if path.is_absolute() else base_dir / path)
            except KeyFileError as exc:
                raise ValueError(f"{at}.public_key_file: {exc}") from None
        if key in out:
            raise ValueError(f"{at}: public key already given to SAE {out[key]!r}")
        out[key] = sae
    return out


def parse_settings(table: dict, *, base_dir: Path) -> KeyServiceSettings:
    """The node TOML's ``[keyservice]`` table -> settings; ValueError names the key."""
    from daemon.curve_keys import KeyFileError, load_keypair

    where = "keyservice"
    secret_file = Path(_need(table, "secret_key_file", str, where))
    try:
        pair = load_keypair(secret_file if secret_file.is_absolute() else base_dir / secret_file)
    except KeyFileError as exc:
        raise ValueError(f"{where}.secret_key_file: {exc}") from None
    remote = table.get("remote_saes", [])
    if not isinstance(remote, list) or not all(isinstance(s, str) for s in remote) or not remote:
        raise ValueError(f"{where}.remote_saes: expected a non-empty list of the SAE IDs at "
                         f"the peer node")
    return KeyServiceSettings(
        endpoint=_need(table, "endpoint", str, where),
        link_id=_need(table, "link", str, where),
        kme_id=_need(table, "kme_id", str, where),
        peer_kme_id=_need(table, "peer_kme_id", str, where),
        public_key=pair.public, secret_key=pair.secret,
        clients=parse_clients(table.get("clients"), base_dir=base_dir),
        remote_saes=frozenset(remote),
        max_key_per_request=_positive(table, "max_key_per_request", 128, where),
        max_key_count=_positive(table, "max_key_count", 100_000, where),
        max_key_size=(_positive(table, "max_key_size", 8192, where)
                      if "max_key_size" in table else None),
        lease_batch=_positive(table, "lease_batch", 1024, where),
        reserve_ahead=_ahead(table.get("reserve_ahead", 256), where),
        reservation_ttl_s=float(_positive(table, "reservation_ttl_s", 3600.0, where)),
        settle_interval_s=float(_positive(table, "settle_interval_s", 2.0, where)),
        reserve_timeout_s=float(_positive(table, "reserve_timeout_s", 2.0, where)),
        reply_ttl_s=float(_positive(table, "reply_ttl_s", 60.0, where)),
    )
