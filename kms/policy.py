"""Security levels, roles and the allocation decision, as pure data and pure functions.

A level says how keys drawn at it may be used (algorithms, key size, age, rotation, how much
data or how many messages one key may protect, whether classical keys are acceptable) and who
may draw (users named, or roles). A user's roles combine: the services and levels they open are
the union of the roles'. ``decide`` gives the allocation verdict with its reason, so the
server can both act on it and write it to the audit log unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kms.crypto import AES_GCM, ALGORITHMS, OTP, OTP_MAC_BYTES
from kms.errors import ConfigError

# The business services of the freight system, each with its own pool.
SERVICES = ("waybills", "identity", "cargo", "position", "password-auth", "certificates",
            "mobile-app")


@dataclass(frozen=True)
class SecurityLevel:
    name: str
    rank: int                                 # higher = more sensitive; draws first when short
    algorithms: tuple[str, ...]
    key_size_bits: int
    max_key_age_s: float                      # a key older than this is erased unused
    rotation_interval_s: float                # a reusable (AES) key is replaced after this
    max_messages_per_key: int                 # AES: records one key may protect (OTP: 1)
    max_bytes_per_key: int                    # AES: bytes one key may protect
    allow_classical: bool                     # may imported classical keys serve this level?
    roles: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    max_keys_per_user_per_hour: int = 0       # 0 = no per-user quota

    def __post_init__(self):
        bad = [a for a in self.algorithms if a not in ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigError(f"level {self.name!r}: algorithms {list(self.algorithms)}; "
                              f"accepted: a non-empty subset of {list(ALGORITHMS)}")
        if self.key_size_bits % 8 or self.key_size_bits < 256:
            raise ConfigError(f"level {self.name!r}: key_size_bits={self.key_size_bits}; "
                              "accepted: a multiple of 8, at least 256")
        if OTP in self.algorithms and self.key_size_bits // 8 <= OTP_MAC_BYTES:
            raise ConfigError(f"level {self.name!r}: one-time pad needs key_size_bits > "
                              f"{OTP_MAC_BYTES * 8} (32 bytes key the tag)")
        for name in ("max_key_age_s", "rotation_interval_s", "max_messages_per_key",
                     "max_bytes_per_key"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"level {self.name!r}: {name} must be > 0")

    def as_dict(self) -> dict:
        return {"name": self.name, "rank": self.rank, "algorithms": list(self.algorithms),
                "key_size_bits": self.key_size_bits, "max_key_age_s": self.max_key_age_s,
                "rotation_interval_s": self.rotation_interval_s,
                "max_messages_per_key": self.max_messages_per_key,
                "max_bytes_per_key": self.max_bytes_per_key,
                "allow_classical": self.allow_classical, "roles": sorted(self.roles),
                "users": sorted(self.users),
                "max_keys_per_user_per_hour": self.max_keys_per_user_per_hour}


@dataclass(frozen=True)
class Role:
    name: str
    services: frozenset[str]                  # "*" opens every service


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[str]


@dataclass
class Policy:
    levels: dict[str, SecurityLevel]
    service_levels: dict[str, str]            # service -> level name
    roles: dict[str, Role] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)

    def __post_init__(self):
        for svc, lvl in self.service_levels.items():
            if lvl not in self.levels:
                raise ConfigError(f"service {svc!r}: level {lvl!r} is not defined; defined: "
                                  f"{sorted(self.levels)}")
        for user in self.users.values():
            for r in user.roles:
                if r not in self.roles:
                    raise ConfigError(f"user {user.name!r}: role {r!r} is not defined; "
                                      f"defined: {sorted(self.roles)}")

    def level_of(self, service: str) -> SecurityLevel:
        return self.levels[self.service_levels[service]]

    def services_of(self, user: str) -> set[str]:
        """The union of what the user's roles open (roles combine, never intersect)."""
        u = self.users.get(user)
        if u is None:
            return set()
        out: set[str] = set()
        for r in u.roles:
            opened = self.roles[r].services
            out |= set(self.service_levels) if "*" in opened else set(opened)
        return out


@dataclass(frozen=True)
class Decision:
    granted: bool
    reason: str
    source: str = ""          # "quantum", "classical" or "" when refused
    algorithm: str = ""

    def as_dict(self) -> dict:
        return {"granted": self.granted, "reason": self.reason, "source": self.source,
                "algorithm": self.algorithm}


def decide(policy: Policy, user: str, service: str, algorithm: str, *, quantum_left: int,
           classical_left: int, user_draws_last_hour: int, record_bytes: int = 0) -> Decision:
    """Whether ``user`` may draw a key for ``service`` now, from which source, and why."""
    if service not in policy.service_levels:
        return Decision(False, f"unknown service {service!r}; known: "
                               f"{', '.join(sorted(policy.service_levels))}")
    level = policy.level_of(service)
    u = policy.users.get(user)
    if u is None:
        return Decision(False, f"unknown user {user!r}")
    if service not in policy.services_of(user):
        return Decision(False, f"user {user!r} (roles {sorted(u.roles)}) has no role that "
                               f"opens service {service!r}")
    if user not in level.users and not (u.roles & level.roles):
        return Decision(False, f"level {level.name!r} admits roles {sorted(level.roles)} and "
                               f"users {sorted(level.users)}; user {user!r} is neither")
    if algorithm not in level.algorithms:
        return Decision(False, f"level {level.name!r} allows only "
                               f"{', '.join(level.algorithms)}; {algorithm!r} refused")
    if algorithm == OTP and record_bytes > level.key_size_bits // 8 - OTP_MAC_BYTES:
        return Decision(False, f"a one-time pad at level {level.name!r} covers at most "
                               f"{level.key_size_bits // 8 - OTP_MAC_BYTES} bytes; "
                               f"{record_bytes} asked")
    if level.max_keys_per_user_per_hour and \
            user_draws_last_hour >= level.max_keys_per_user_per_hour:
        return Decision(False, f"user {user!r} drew {user_draws_last_hour} keys at level "
                               f"{level.name!r} in the last hour; the quota is "
                               f"{level.max_keys_per_user_per_hour}")
    if quantum_left > 0:
        return Decision(True, f"quantum key from the {service!r} pool "
                              f"({quantum_left} left, level {level.name!r})", "quantum",
                        algorithm)
    if classical_left > 0 and level.allow_classical and algorithm == AES_GCM:
        return Decision(True, f"no quantum key left for {service!r}; classical key used as "
                              f"level {level.name!r} allows", "classical", algorithm)
    why = ("and level forbids classical keys" if not level.allow_classical
           else "and no classical key is left" if classical_left == 0
           else "and classical keys serve AES-256-GCM only")
    return Decision(False, f"no quantum key left in the {service!r} pool {why}")
