"""site.toml -> typed configuration, with the freight operator's defaults.

Every error names the file, the key and what is accepted. Levels, service levels and roles
have defaults (below) that a site file may override one entry at a time.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import zmq.utils.z85

from kms.crypto import AES_GCM, OTP
from kms.errors import ConfigError
from kms.policy import SERVICES, Policy, Role, SecurityLevel, User

DAY = 86400.0

DEFAULT_LEVELS = {
    "public": dict(rank=0, algorithms=[AES_GCM], key_size_bits=256, max_key_age_s=7 * DAY,
                   rotation_interval_s=DAY, max_messages_per_key=1_000_000,
                   max_bytes_per_key=1 << 30, allow_classical=True,
                   roles=["app-backend", "dispatcher", "security-officer", "platform"]),
    "internal": dict(rank=1, algorithms=[AES_GCM], key_size_bits=256, max_key_age_s=DAY,
                     rotation_interval_s=3600.0, max_messages_per_key=10_000,
                     max_bytes_per_key=64 << 20, allow_classical=True,
                     roles=["dispatcher", "app-backend", "security-officer", "platform"]),
    "confidential": dict(rank=2, algorithms=[AES_GCM], key_size_bits=256,
                         max_key_age_s=DAY / 2, rotation_interval_s=600.0,
                         max_messages_per_key=1000, max_bytes_per_key=8 << 20,
                         allow_classical=True,
                         roles=["dispatcher", "security-officer", "platform"]),
    "critical": dict(rank=3, algorithms=[OTP], key_size_bits=8192, max_key_age_s=3600.0,
                     rotation_interval_s=60.0, max_messages_per_key=1, max_bytes_per_key=992,
                     allow_classical=False, roles=["hr", "security-officer", "platform"]),
}
DEFAULT_SERVICE_LEVELS = {"waybills": "confidential", "identity": "critical",
                          "cargo": "internal", "position": "internal",
                          "password-auth": "confidential", "certificates": "confidential",
                          "mobile-app": "public"}
DEFAULT_ROLES = {"dispatcher": ["waybills", "cargo", "position"], "hr": ["identity"],
                 "app-backend": ["mobile-app", "position"], "security-officer": ["*"],
                 "platform": ["*"]}
DEFAULT_POOL_TARGET = 64


def build_policy(levels=None, service_levels=None, roles=None, users=None) -> Policy:
    lv = {**DEFAULT_LEVELS, **(levels or {})}
    sl = {**DEFAULT_SERVICE_LEVELS, **(service_levels or {})}
    rl = {**DEFAULT_ROLES, **(roles or {})}
    us = {"platform": ["platform"], **(users or {})}
    return Policy(
        levels={n: SecurityLevel(name=n, **{**v, "algorithms": tuple(v["algorithms"]),
                                            "roles": frozenset(v.get("roles", ())),
                                            "users": frozenset(v.get("users", ()))})
                for n, v in lv.items()},
        service_levels=sl,
        roles={n: Role(n, frozenset(s)) for n, s in rl.items()},
        users={n: User(n, frozenset(r)) for n, r in us.items()})


@dataclass
class NodeConfig:
    endpoint: str
    server_public_key: bytes
    site_sae: str
    peer_sae: str


@dataclass
class SiteConfig:
    path: Path
    name: str
    state_dir: Path
    api_endpoint: str
    depot_endpoint: str
    policy: Policy
    node: NodeConfig | None
    pool_targets: dict[str, int]
    user_keys: dict[bytes, str]          # z85 public key -> user name
    charge_plan: dict[str, int]
    refill_interval_s: float = 5.0
    extra: dict = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "kms.db"


def _get(table: dict, key: str, kind, where: str, default=...):
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    val = table[key]
    if not isinstance(val, kind) or isinstance(val, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key} = {val!r}: expected {getattr(kind, '__name__', kind)}")
    return val


def _z85_key(text: str, where: str) -> bytes:
    raw = text.encode()
    try:
        if len(raw) != 40 or len(zmq.utils.z85.decode(raw)) != 32:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{where}: not a CURVE public key (40 Z85 characters)") from None
    return raw


def load(path: str | Path) -> SiteConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    f = str(path)
    site = _get(data, "site", dict, f)
    w = f"{f} [site]"
    node = None
    if "node" in data:
        n = _get(data, "node", dict, f)
        wn = f"{f} [node]"
        node = NodeConfig(_get(n, "endpoint", str, wn),
                          _z85_key(_get(n, "server_public_key", str, wn),
                                   f"{wn}.server_public_key"),
                          _get(n, "site_sae", str, wn), _get(n, "peer_sae", str, wn))
    services = _get(data, "services", dict, f, {})
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ConfigError(f"{f} [services]: unknown service {sorted(unknown)[0]!r}; accepted: "
                          f"{', '.join(SERVICES)}")
    users, user_keys = {}, {}
    for name, u in _get(data, "users", dict, f, {}).items():
        wu = f"{f} [users.{name}]"
        users[name] = list(_get(u, "roles", list, wu))
        if "public_key" in u:
            user_keys[_z85_key(_get(u, "public_key", str, wu), f"{wu}.public_key")] = name
    roles = {n: list(_get(r, "services", list, f"{f} [roles.{n}]"))
             for n, r in _get(data, "roles", dict, f, {}).items()}
    levels = {}
    for n, lv in _get(data, "levels", dict, f, {}).items():
        known = set(DEFAULT_LEVELS["public"]) | {"users"}
        bad = set(lv) - known
        if bad:
            raise ConfigError(f"{f} [levels.{n}]: unknown key {sorted(bad)[0]!r}; accepted: "
                              f"{', '.join(sorted(known))}")
        base = DEFAULT_LEVELS.get(n)
        if base is None and set(DEFAULT_LEVELS["public"]) - set(lv):
            raise ConfigError(f"{f} [levels.{n}]: a new level needs every key: "
                              f"{', '.join(sorted(DEFAULT_LEVELS['public']))}")
        levels[n] = {**(base or {}), **lv}
    try:
        policy = build_policy(levels, services, roles, users)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{f}: {exc}") from None
    targets = {s: DEFAULT_POOL_TARGET for s in policy.service_levels}
    for s, t in _get(data, "pools", dict, f, {}).items():
        if s not in policy.service_levels or not isinstance(t, int) or t < 0:
            raise ConfigError(f"{f} [pools].{s} = {t!r}: expected a known service and an "
                              "integer >= 0")
        targets[s] = t
    plan = _get(data, "charge", dict, f, {"position": 20, "cargo": 20, "waybills": 10,
                                           "identity": 4, "password-auth": 8})
    for s, n in plan.items():
        if s not in policy.service_levels or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{f} [charge].{s} = {n!r}: expected a known service and an "
                              "integer >= 0")
    return SiteConfig(
        path=path, name=_get(site, "name", str, w),
        state_dir=Path(_get(site, "state_dir", str, w, "/var/lib/qkd-kms")),
        api_endpoint=_get(site, "api_endpoint", str, w, "tcp://127.0.0.1:7300"),
        depot_endpoint=_get(site, "depot_endpoint", str, w, "tcp://127.0.0.1:7301"),
        policy=policy, node=node, pool_targets=targets, user_keys=user_keys, charge_plan=plan,
        refill_interval_s=float(_get(site, "refill_interval_s", (int, float), w, 5.0)))
