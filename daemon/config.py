"""node.toml -> a typed, frozen ``NodeConfig``, checked completely before the node starts.

The file is the node's whole contract with its operator (see ``systemd/node.example.toml``):
every key is known here, so a typo is an error and never a silently ignored setting. Every error
is one ``ConfigError`` line naming the file, the key and what is accepted; ``qkd-node run``
prints it and exits 2. Relative paths are taken from the config file's directory.

Key files are only checked for being readable (and the secret key for being private): their
format belongs to the peer channel, which reads them.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.control.common import ControlConfigError
from daemon.control.settings import BOOLEANS as _CONTROL_BOOLEANS
from daemon.control.settings import NAMES as _CONTROL
from daemon.control.settings import RANGES as _CONTROL_RANGES
from daemon.control.settings import ControlSettings
from daemon.keyservice.reservations import MAX_UNITS as MAX_KEY_UNITS
from daemon.keyservice.settings import MAX_RESERVE_AHEAD, KeyServiceSettings, parse_settings

ROLES = ("alice", "bob")
PROTOCOLS = ("bb84-decoy", "bb84", "b92", "lt3")
LOG_LEVELS = ("debug", "info", "notice", "warning", "error")
SCHEDULES = ("yan", "yan-plain", "original")
ADMIN_SOCKET_MODES = {"0600": 0o600, "0660": 0o660}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID_TEXT = "1-64 characters of letters, digits, '_', '.', '-' (starting with a letter or digit)"
_ENDPOINT = re.compile(r"^tcp://[^\s:]+:\d{1,5}$")


class ConfigError(ValueError):
    """One line: ``<file>: <key> = <value>: <what is accepted>``."""

    def __init__(self, path: Path | str, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}")


@dataclass(frozen=True)
class DeviceConfig:
    name: str       # the device's role in the link: "board", "detector", "switch", ...
    driver: str     # a name registered in drivers.registry
    url: str


@dataclass(frozen=True)
class PeerConfig:
    endpoint: str             # tcp://host:port
    bind: bool                # True: this node listens on endpoint; False: it connects
    public_key_file: Path     # the peer's CurveZMQ public key (pinned)
    auth_bootstrap_file: Path  # pre-shared Wegman-Carter key material, used until QKD refills it


@dataclass(frozen=True)
class KeyPairConfig:
    public_key_file: Path
    secret_key_file: Path


@dataclass(frozen=True)
class LinkPolicy:
    """What is fixed in advance for every block of a link (BlockParams are built from it)."""

    block_pulses: int
    eps_sec: float
    eps_cor: float
    qber_tol: float           # Tomamichel's Q_tol: a block whose sample QBER exceeds it aborts
    qber_threshold: float     # abort when the QBER upper bound exceeds it
    sample_fraction: float
    min_sample_size: int
    schedule: str
    blocks_in_flight: int
    block_timeout_s: float
    qber_alarm_blocks: int    # this many QBER aborts in a row raise an alarm


@dataclass(frozen=True)
class Calibration:
    """What calibration measured, for the protocols whose bound takes it as input.

    B92: the conclusive yield and Bob's efficiency (the USD attack shows only as a yield drop).
    LT3 (``finite_key_lt``): the characterised Bloch vectors (P_X, P_Z) of Alice's states Z0,
    Z1, X0, Bob's Z share of clicks (splitter ratio times relative detector efficiency), the
    tolerance of the per-block basis-efficiency check around it, and the multi-click ceiling
    (also B92's when given). Alice's state probabilities are not here: her board announces
    its X probability (``P_BASIS_X``) and draws the Z bit evenly.
    """

    expected_conclusive_per_pulse: float | None = None
    bob_efficiency: float | None = None
    max_multi_click_fraction: float | None = None
    bob_z_probability: float | None = None
    max_basis_efficiency_deviation: float | None = None
    bloch_vectors: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class LinkConfig:
    id: str
    role: str
    protocol: str
    peer: PeerConfig
    keys: KeyPairConfig
    devices: tuple[DeviceConfig, ...]
    policy: LinkPolicy
    calibration: Calibration = field(default_factory=Calibration)
    control: ControlSettings = field(default_factory=ControlSettings)   # Bob's control loops

    def device(self, name: str) -> DeviceConfig:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise KeyError(name)


@dataclass(frozen=True)
class KeyStoreConfig:
    path: Path
    capacity_bits: int
    key_size_bits: int


@dataclass(frozen=True)
class NodeConfig:
    source: Path
    node_id: str
    state_dir: Path
    admin_socket: Path
    admin_socket_mode: int
    log_level: str
    keystore: KeyStoreConfig
    links: tuple[LinkConfig, ...]
    keyservice: KeyServiceSettings | None = None    # None: the node serves no keys


# -- reading one value ------------------------------------------------------------------------

class _Table:
    """A TOML table with the dotted name of its place in the file, for error messages."""

    def __init__(self, source: Path, name: str, data: Any, allowed: tuple[str, ...]):
        self.source, self.name = source, name
        if not isinstance(data, dict):
            raise ConfigError(source, name, f"must be a table, got {_show(data)}")
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise ConfigError(source, self.key(unknown[0]),
                              f"unknown key; accepted here: {', '.join(allowed)}")
        self.data = data

    def key(self, k: str) -> str:
        return f"{self.name}.{k}" if self.name else k

    def error(self, k: str, problem: str) -> ConfigError:
        value = self.data.get(k, None)
        shown = f" = {_show(value)}" if k in self.data else ""
        return ConfigError(self.source, self.key(k) + shown, problem)

    def table(self, k: str, allowed: tuple[str, ...], required: bool = True) -> _Table:
        if k not in self.data:
            if required:
                raise ConfigError(self.source, self.key(k), "missing table")
            return _Table(self.source, self.key(k), {}, allowed)
        return _Table(self.source, self.key(k), self.data[k], allowed)

    def has(self, k: str) -> bool:
        return k in self.data

    def text(self, k: str, default: str | None = None, *, choices: tuple[str, ...] = (),
             pattern: re.Pattern | None = None, accepted: str = "") -> str:
        if k not in self.data:
            if default is None:
                raise ConfigError(self.source, self.key(k),
                                  f"missing; expected {accepted or _choices(choices)}")
            return default
        v = self.data[k]
        if not isinstance(v, str) or not v:
            raise self.error(k, f"expected {accepted or 'a non-empty string'}")
        if choices and v not in choices:
            raise self.error(k, f"expected {_choices(choices)}")
        if pattern is not None and not pattern.match(v):
            raise self.error(k, f"expected {accepted}")
        return v

    def boolean(self, k: str, default: bool) -> bool:
        if k not in self.data:
            return default
        v = self.data[k]
        if not isinstance(v, bool):
            raise self.error(k, "expected true or false")
        return v

    def number(self, k: str, default: float | None, lo: float, hi: float, *,
               integer: bool = False, open_lo: bool = False, open_hi: bool = False) -> float:
        lo_b, hi_b = "(" if open_lo else "[", ")" if open_hi else "]"
        kind = "an integer" if integer else "a number"
        accepted = f"{kind} in {lo_b}{lo:g}, {hi:g}{hi_b}"
        if k not in self.data:
            if default is None:
                raise ConfigError(self.source, self.key(k), f"missing; expected {accepted}")
            return default
        v = self.data[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.error(k, f"expected {accepted}")
        if integer:
            if float(v) != int(v):
                raise self.error(k, f"expected {accepted}")
            v = int(v)
        if v < lo or v > hi or (open_lo and v == lo) or (open_hi and v == hi):
            raise self.error(k, f"expected {accepted}")
        return v

    def path(self, k: str, default: str | None = None) -> Path:
        raw = self.text(k, default, accepted="a file path")
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.source.parent / p)

    def readable_file(self, k: str, *, private: bool = False) -> Path:
        p = self.path(k)
        try:
            st = p.stat()
            with open(p, "rb"):
                pass
        except OSError as exc:
            raise self.error(k, f"cannot read {p}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise self.error(k, f"{p} is not a regular file")
        if private and st.st_mode & 0o077:
            raise self.error(k, f"{p} has mode {stat.S_IMODE(st.st_mode):04o}; a secret key "
                                f"must be readable by its owner only (chmod 600)")
        return p


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _choices(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(repr(c) for c in choices)


# -- the sections -----------------------------------------------------------------------------

_TOP = ("node", "keystore", "link", "keyservice")
_NODE = ("id", "state_dir", "admin_socket", "admin_socket_mode", "log_level")
_KEYSTORE = ("path", "capacity_bits", "key_size_bits")
_LINK = ("id", "role", "protocol", "peer", "keys", "devices", "policy", "calibration",
         "control")
_PEER = ("endpoint", "bind", "public_key_file", "auth_bootstrap_file")
_KEYS = ("public_key_file", "secret_key_file")
_DEVICE = ("driver", "url")
_POLICY = ("block_pulses", "eps_sec", "eps_cor", "qber_tol", "qber_threshold",
           "sample_fraction", "min_sample_size", "schedule", "blocks_in_flight",
           "block_timeout_s", "qber_alarm_blocks")
_CALIBRATION_B92 = ("expected_conclusive_per_pulse", "bob_efficiency")
_CALIBRATION_LT3 = ("bloch_vectors", "bob_z_probability", "max_multi_click_fraction")
_LT3_ONLY = ("bloch_vectors", "bob_z_probability", "max_basis_efficiency_deviation")
_CALIBRATION = (*_CALIBRATION_B92, "max_multi_click_fraction", "bob_z_probability",
                "max_basis_efficiency_deviation", "bloch_vectors")
LT3_BASIS_EFFICIENCY_DEVIATION = 0.02
"""Default ``max_basis_efficiency_deviation``: BlockParams' own default, written into the
config so that a node stating it and one leaving it out agree in the hello."""
_BLOCH_TEXT = ("three [P_X, P_Z] pairs for Z0, Z1, X0, as characterised "
               "(ideal H, V, D: [[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])")
_KEYSERVICE = ("endpoint", "link", "kme_id", "peer_kme_id", "secret_key_file", "remote_saes",
               "clients", "max_key_per_request", "max_key_count", "max_key_size", "lease_batch",
               "reserve_ahead",
               "reservation_ttl_s", "settle_interval_s", "reserve_timeout_s", "reply_ttl_s")
_KS_CLIENT = ("sae_id", "public_key", "public_key_file")


def load(path: str | os.PathLike) -> NodeConfig:
    """Read and check ``path``; raise ConfigError (one line) on the first problem."""
    source = Path(path)
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(source, "(file)", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(syntax)", f"not valid TOML: {exc}") from None
    return parse(data, source)


def parse(data: dict, source: Path) -> NodeConfig:
    top = _Table(source, "", data, _TOP)
    node = top.table("node", _NODE)
    node_id = node.text("id", pattern=_ID, accepted=_ID_TEXT)
    state_dir = node.path("state_dir")
    admin_socket = node.path("admin_socket", str(state_dir / "admin.sock"))
    mode_text = node.text("admin_socket_mode", "0600", choices=tuple(ADMIN_SOCKET_MODES))
    log_level = node.text("log_level", "info", choices=LOG_LEVELS)

    ks = top.table("keystore", _KEYSTORE)
    keystore = KeyStoreConfig(
        path=ks.path("path", str(state_dir / "keys.sqlite")),
        capacity_bits=int(ks.number("capacity_bits", None, 1, 1e15, integer=True)),
        key_size_bits=int(ks.number("key_size_bits", 256, 8, 65536, integer=True)))
    if keystore.key_size_bits % 8:
        raise ks.error("key_size_bits", "expected a multiple of 8 (keys are whole bytes)")

    raw_links = data.get("link")
    if not isinstance(raw_links, list) or not raw_links:
        raise ConfigError(source, "link", "missing; expected one or more [[link]] tables")
    links = tuple(_link(source, f"link[{i}]", raw) for i, raw in enumerate(raw_links))
    seen: set[str] = set()
    for i, link in enumerate(links):
        if link.id in seen:
            raise ConfigError(source, f"link[{i}].id = {link.id!r}",
                              "expected a link id not used by another [[link]]")
        seen.add(link.id)
    return NodeConfig(source, node_id, state_dir, admin_socket, ADMIN_SOCKET_MODES[mode_text],
                      log_level, keystore, links, _keyservice(top, links, keystore))


def _link(source: Path, name: str, raw: Any) -> LinkConfig:
    t = _Table(source, name, raw, _LINK)
    link_id = t.text("id", pattern=_ID, accepted=_ID_TEXT)
    role = t.text("role", choices=ROLES)
    protocol = t.text("protocol", choices=PROTOCOLS)

    p = t.table("peer", _PEER)
    peer = PeerConfig(
        endpoint=p.text("endpoint", pattern=_ENDPOINT, accepted="tcp://HOST:PORT"),
        bind=p.boolean("bind", role == "alice"),
        public_key_file=p.readable_file("public_key_file"),
        auth_bootstrap_file=p.readable_file("auth_bootstrap_file", private=True))
    port = int(peer.endpoint.rsplit(":", 1)[1])
    if not 1 <= port <= 65535:
        raise p.error("endpoint", "expected tcp://HOST:PORT with a port in [1, 65535]")

    k = t.table("keys", _KEYS)
    keys = KeyPairConfig(public_key_file=k.readable_file("public_key_file"),
                         secret_key_file=k.readable_file("secret_key_file", private=True))

    devices = _devices(t)
    pol = t.table("policy", _POLICY)
    policy = LinkPolicy(
        block_pulses=int(pol.number("block_pulses", None, 1e6, 1e12, integer=True)),
        eps_sec=pol.number("eps_sec", 1e-10, 0, 1, open_lo=True, open_hi=True),
        eps_cor=pol.number("eps_cor", 1e-15, 0, 1, open_lo=True, open_hi=True),
        qber_tol=pol.number("qber_tol", None, 0, 0.5, open_hi=True),
        qber_threshold=pol.number("qber_threshold", 0.11, 0, 0.5, open_lo=True, open_hi=True),
        sample_fraction=pol.number("sample_fraction", 0.1, 0, 1, open_lo=True, open_hi=True),
        min_sample_size=int(pol.number("min_sample_size", 1000, 1, 1e9, integer=True)),
        schedule=pol.text("schedule", "yan", choices=SCHEDULES),
        blocks_in_flight=int(pol.number("blocks_in_flight", 4, 1, 256, integer=True)),
        block_timeout_s=pol.number("block_timeout_s", 300.0, 1, 86400),
        qber_alarm_blocks=int(pol.number("qber_alarm_blocks", 3, 1, 1000, integer=True)))
    if policy.qber_tol > policy.qber_threshold:
        raise pol.error("qber_tol", f"expected at most qber_threshold "
                                    f"({policy.qber_threshold:g})")

    calibration = _calibration(t, protocol)
    control = _control(t)
    return LinkConfig(link_id, role, protocol, peer, keys, devices, policy, calibration,
                      control)


def _calibration(link: _Table, protocol: str) -> Calibration:
    """``[link.calibration]``: B92 and LT3 need measured inputs of their bounds; there are no
    defaults for what only a measurement can say (a real link's states are never exactly
    H, V, D), only for the check tolerance."""
    c = link.table("calibration", _CALIBRATION, required=False)
    required = {"b92": _CALIBRATION_B92, "lt3": _CALIBRATION_LT3}.get(protocol, ())
    for k_name in required:
        if not c.has(k_name):
            accepted = {"bloch_vectors": _BLOCH_TEXT,
                        "bob_z_probability": "a number in (0, 1)"}.get(k_name,
                                                                       "a number in (0, 1]")
            raise ConfigError(link.source, c.key(k_name),
                              f"missing; {protocol.upper()} needs it ({accepted})")
    if protocol != "lt3":
        for k_name in _LT3_ONLY:
            if c.has(k_name):
                raise c.error(k_name, "only an LT3 link uses it (protocol = 'lt3')")

    def optional(k_name: str, lo: float, hi: float, **kw) -> float | None:
        return c.number(k_name, None, lo, hi, **kw) if c.has(k_name) else None

    deviation = optional("max_basis_efficiency_deviation", 0, 0.5, open_lo=True, open_hi=True)
    if protocol == "lt3" and deviation is None:
        deviation = LT3_BASIS_EFFICIENCY_DEVIATION
    return Calibration(
        expected_conclusive_per_pulse=optional("expected_conclusive_per_pulse", 0, 1,
                                               open_lo=True),
        bob_efficiency=optional("bob_efficiency", 0, 1, open_lo=True),
        max_multi_click_fraction=optional("max_multi_click_fraction", 0, 1, open_lo=True),
        bob_z_probability=optional("bob_z_probability", 0, 1, open_lo=True, open_hi=True),
        max_basis_efficiency_deviation=deviation,
        bloch_vectors=_bloch_vectors(c) if c.has("bloch_vectors") else None)


def _bloch_vectors(c: _Table) -> tuple[tuple[float, float], ...]:
    """Three characterised (P_X, P_Z) pairs that the LT3 bound can invert."""
    from postprocessing.finite_key_lt import bloch_violations

    raw = c.data["bloch_vectors"]
    ok = (isinstance(raw, list) and len(raw) == 3
          and all(isinstance(v, list) and len(v) == 2 for v in raw)
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                  and -1.1 <= x <= 1.1 for v in raw for x in v))
    if not ok:
        raise c.error("bloch_vectors", f"expected {_BLOCH_TEXT}, each component in "
                                       f"[-1.1, 1.1]")
    vectors = tuple((float(v[0]), float(v[1])) for v in raw)
    problems = bloch_violations(vectors)
    if problems:
        raise c.error("bloch_vectors", f"the LT3 bound cannot use these states: "
                                       f"{'; '.join(problems)}")
    return vectors


def _control(link: _Table) -> ControlSettings:
    """``[link.control]``: Bob's loop settings, each checked against its accepted range. An
    alice link has no loops; its table is checked all the same (a file copied from Bob's node
    and given ``role = "alice"`` stays valid) and then unused."""
    c = link.table("control", _CONTROL, required=False)
    defaults = ControlSettings()
    values: dict[str, Any] = {}
    for name, (lo, hi, integer, _unit) in _CONTROL_RANGES.items():
        if c.has(name):
            v = c.number(name, None, lo, hi, integer=integer)
            values[name] = int(v) if integer else float(v)
    for name in _CONTROL_BOOLEANS:
        values[name] = c.boolean(name, getattr(defaults, name))
    try:
        return ControlSettings(**values)
    except ControlConfigError as exc:       # a rule across settings (the dither bounds)
        raise ConfigError(link.source, c.name, str(exc)) from None


def _keyservice(top: _Table, links: tuple[LinkConfig, ...],
                keystore: KeyStoreConfig) -> KeyServiceSettings | None:
    """``[keyservice]`` (optional): what ``_Table`` can say about each key first (unknown keys,
    the endpoint, the link, the secret key file's mode, each client entry), then the key
    service's own reading of the table, its one-line errors naming the key."""
    if not top.has("keyservice"):
        return None
    t = top.table("keyservice", _KEYSERVICE)
    t.text("endpoint", pattern=_ENDPOINT, accepted="tcp://HOST:PORT (HOST may be * for every "
                                                   "interface)")
    t.text("link", choices=tuple(link.id for link in links))
    for k in ("kme_id", "peer_kme_id"):
        t.text(k, pattern=_ID, accepted=_ID_TEXT)
    t.readable_file("secret_key_file", private=True)
    clients = t.data.get("clients")
    if not isinstance(clients, list) or not clients:
        raise ConfigError(top.source, t.key("clients"), "missing; expected one or more "
                          "[[keyservice.clients]] tables (the service refuses to start without "
                          "clients)")
    for i, entry in enumerate(clients):
        c = _Table(top.source, f"{t.key('clients')}[{i}]", entry, _KS_CLIENT)
        if c.has("public_key_file"):
            c.readable_file("public_key_file")
        elif not c.has("public_key"):
            raise ConfigError(top.source, c.key("public_key_file"),
                              "missing; expected public_key_file (a ZeroMQ certificate) or "
                              "public_key (40 Z85 characters)")
    for k, (lo, hi, integer) in _KS_NUMBERS.items():
        t.number(k, 1, lo, hi, integer=integer, open_lo=not integer)
    unit = keystore.key_size_bits
    if t.has("max_key_size") and t.data["max_key_size"] % unit:
        raise ConfigError(top.source, t.key("max_key_size"),
                          f"= {t.data['max_key_size']}: expected a multiple of the store's key "
                          f"size ({unit} bits), at most {unit * MAX_KEY_UNITS}")
    try:
        return parse_settings(t.data, base_dir=top.source.parent)
    except ValueError as exc:           # the service's own checks: "keyservice.KEY...: why"
        named = re.match(r"(keyservice[\w.\[\]]*(?: = .*?)?): (.*)", str(exc))
        key, problem = named.groups() if named else ("keyservice", str(exc))
        raise ConfigError(top.source, key, problem) from None


# Accepted ranges of the key service's numbers (each optional; defaults in KeyServiceSettings).
_KS_NUMBERS = {"max_key_per_request": (1, 1024, True), "max_key_count": (1, 1e12, True),
               "max_key_size": (8, 1 << 24, True),
               "lease_batch": (1, 1 << 20, True), "reserve_ahead": (0, MAX_RESERVE_AHEAD, True),
               "reservation_ttl_s": (0, 1e7, False), "settle_interval_s": (0, 3600, False),
               "reserve_timeout_s": (0, 3600, False), "reply_ttl_s": (0, 86400, False)}


def _devices(link: _Table) -> tuple[DeviceConfig, ...]:
    from drivers import registry

    if not link.has("devices"):
        raise ConfigError(link.source, link.key("devices"),
                          "missing table; a link needs at least [devices.board]")
    raw = link.data["devices"]
    if not isinstance(raw, dict):
        raise link.error("devices", "must be a table of devices")
    known = registry.available()
    out = []
    for dev_name, dev_raw in raw.items():
        if not _ID.match(dev_name):
            raise ConfigError(link.source, link.key(f"devices.{dev_name}"),
                              f"device name: expected {_ID_TEXT}")
        d = _Table(link.source, link.key(f"devices.{dev_name}"), dev_raw, _DEVICE)
        driver = d.text("driver", choices=tuple(known))
        url = d.text("url", accepted="the device's URL (e.g. socket://127.0.0.1:7101, "
                                     "/dev/ttyUSB0, TCPIP::host::port::SOCKET)")
        out.append(DeviceConfig(dev_name, driver, url))
    if not any(dev.name == "board" for dev in out):
        raise ConfigError(link.source, link.key("devices.board"),
                          "missing; every link needs its QKD board")
    return tuple(out)
