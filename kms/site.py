"""One site's KMS process: store, server, platform, its two endpoints and the refill loop.

The composition root: ``qkd-kms run`` builds a ``Site`` from site.toml, the demo and the tests
build one from parts. Pools are topped up from the node every ``refill_interval_s`` and expired
keys purged on the same tick.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import zmq

from kms.api import Api
from kms.config import SiteConfig
from kms.errors import ConfigError, KmsError
from kms.keysource import NodeKeySource, SaeCredentials
from kms.platform import KeyCloudPlatform
from kms.rpc import RpcServer
from kms.server import KeyManagementServer
from kms.store import Store

log = logging.getLogger("qkd.kms")
SERVER_KEY_FILE = "server.key"
SAE_KEY_DIR = "sae"


def keypair_file(path: Path) -> tuple[bytes, bytes]:
    """A CURVE keypair kept as 'public\\nsecret' in a 0600 file, made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"\n".join(zmq.curve_keypair()))
            f.flush()
            os.fsync(f.fileno())
    parts = path.read_bytes().split(b"\n")
    if len(parts) != 2 or len(parts[0]) != 40 or len(parts[1]) != 40:
        raise ConfigError(f"{path}: not a keypair file (two lines of 40 Z85 characters)")
    return parts[0], parts[1]


def sae_credentials(state_dir: Path, services) -> dict[str, SaeCredentials]:
    return {s: SaeCredentials(*keypair_file(state_dir / SAE_KEY_DIR / f"{s}.key"))
            for s in services}


class Site:
    def __init__(self, kms: KeyManagementServer, platform: KeyCloudPlatform, api: Api, *,
                 server_keys: tuple[bytes, bytes], api_endpoint: str, depot_endpoint: str,
                 refill_interval_s: float = 5.0, name: str = "kms"):
        self.kms, self.platform, self.api = kms, platform, api
        self.name = name
        self.public_key = server_keys[0]
        self.road = RpcServer(f"{name}-api", api_endpoint, public_key=server_keys[0],
                              secret_key=server_keys[1], resolve=api.resolve_any,
                              handler=api.road)
        self.depot = RpcServer(f"{name}-depot", depot_endpoint, public_key=server_keys[0],
                               secret_key=server_keys[1], resolve=api.resolve_terminal,
                               handler=api.depot)
        self.refill_interval_s = refill_interval_s
        self._stop = threading.Event()
        self._refiller: threading.Thread | None = None

    @classmethod
    def from_config(cls, cfg: SiteConfig) -> "Site":
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = Store(cfg.db_path)
        source = None
        if cfg.node is not None:
            source = NodeKeySource(cfg.node.endpoint, cfg.node.server_public_key,
                                   cfg.node.site_sae, cfg.node.peer_sae,
                                   sae_credentials(cfg.state_dir, cfg.policy.service_levels))
        kms = KeyManagementServer(store, cfg.policy, source, site=cfg.name,
                                  pool_targets=cfg.pool_targets)
        platform = KeyCloudPlatform(kms)
        api = Api(kms, platform, {k.decode(): u for k, u in cfg.user_keys.items()},
                  cfg.charge_plan)
        return cls(kms, platform, api, server_keys=keypair_file(cfg.state_dir / SERVER_KEY_FILE),
                   api_endpoint=cfg.api_endpoint, depot_endpoint=cfg.depot_endpoint,
                   refill_interval_s=cfg.refill_interval_s, name=cfg.name)

    def start(self, refill: bool = True) -> "Site":
        self.road.start()
        self.depot.start()
        if refill:
            self._refiller = threading.Thread(target=self._refill_loop, name=f"{self.name}-refill",
                                              daemon=True)
            self._refiller.start()
        return self

    def tick(self) -> dict[str, int]:
        self.kms.purge_expired()
        return self.kms.refill()

    def _refill_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except KmsError as exc:
                log.warning("%s: refill: %s", self.name, exc.message)
            self._stop.wait(self.refill_interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._refiller is not None:
            self._refiller.join(10)
        self.road.stop()
        self.depot.stop()
        if self.kms.source is not None:
            self.kms.source.close()
        self.kms.store.close()
