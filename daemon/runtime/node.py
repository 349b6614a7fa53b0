"""``qkd-node run --config FILE``: the node process, and the composition root that builds it.

One asyncio loop: per link an engine task (restarted with backoff if it fails, so one broken
link never takes the node down), the admin socket, and the signal handlers — SIGTERM and SIGINT
stop cleanly (blocks in flight are abandoned; their keys were never deliverable and the next
hello resolves them), SIGHUP re-reads the config and applies what can change live (the log
level and the key service's client allow-list; the rest is named as needing a restart).
Kernels run in a thread pool sized to the machine; each link's board I/O has its own thread.

With a ``[keyservice]`` table the node also runs the key service (``daemon/keyservice/
runner.py``) on that link's peer channel: the channel hands it the key-service messages
(types 0x60-0x65, block 0) and its reconnects, and it sends through whichever channel the
link's engine runs now (an engine restart builds a new one). It starts once the store is open
and the link's engine is running; on the way out it closes first, while the peer channel can
still carry its last VOID, then the links, then the store.

Room is left here for the control loops and the systemd notify/watchdog of the next issue:
``Node.reload_hooks`` and ``Node.healthy()``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from daemon import config as cfg
from daemon.control.supervisor import ControlSupervisor
from daemon.devices import DevicePool, DeviceSetupError
from daemon.engine.link import LinkEngine
from daemon.keyservice.runner import MESSAGE_TYPES as KEYSERVICE_TYPES
from daemon.keyservice.runner import KeyServiceRunner
from daemon.keyservice.server import ServiceStartError
from daemon.keystore.errors import StoreError
from daemon.runtime import journal, notify
from daemon.runtime.admin import AdminServer, AdminSocketError
from daemon.runtime.wiring import MissingComponent, Ports, real_ports

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
KEYSERVICE_CLOSE_S = 5.0      # the runner's close waits up to 1 s for its VOID to go out


class KeyServiceUnavailable(RuntimeError):
    """The configured key service cannot start (one line: where and why)."""


class Node:
    def __init__(self, config: cfg.NodeConfig, ports: Ports, log,
                 control: Callable | None = ControlSupervisor.for_node):
        self.config = config
        self.ports = ports
        self.log = log
        self.engines: dict[str, LinkEngine] = {}
        self.devices = DevicePool(ports.device_opener)
        self.store = None
        self.started_at = time.monotonic()
        self.reload_hooks: list[Callable[[cfg.NodeConfig], None]] = []
        self._stop = asyncio.Event()
        self._control_factory = control       # (config, devices by link, log) -> supervisor
        self.control: ControlSupervisor | None = None
        self.keyservice: KeyServiceRunner | None = None
        self._keyservice_started = False

    def stop(self) -> None:
        self._stop.set()

    def healthy(self) -> bool:
        """Every link engine alive (the watchdog of the next issue pings only then)."""
        return all(e.figures.state not in ("stopped",) and not e.figures.state.startswith(
            "failed") for e in self.engines.values()) and (
            self.control is None or self.control.healthy())

    def status(self, keyservice_view: dict | None = None) -> dict:
        """The node's status; the key service's part from ``keyservice_view`` (its
        ``status_view``, counted off the event loop) or, without it, counted here."""
        out = {"node": self.config.node_id, "pid": os.getpid(),
               "uptime_s": round(time.monotonic() - self.started_at, 3),
               "links": self._links_status()}
        if self.config.keyservice is not None:
            out["keyservice"] = self._keyservice_summary(keyservice_view)
        return out

    def _links_status(self) -> list[dict]:
        return self._control_view([e.status() for e in self.engines.values()])

    def _keyservice_ready(self) -> bool:
        return self.keyservice is not None and self._keyservice_started

    def _keyservice_summary(self, view: dict | None = None) -> dict:
        """The key service in a status line: where, for whom, what it has handed out (the
        full view, with reservations and streams, is the ``keyservice`` admin op)."""
        ks = self.keyservice
        if not self._keyservice_ready():
            return {"state": "starting", "endpoint": self.config.keyservice.endpoint}
        view = ks.status() if view is None else view
        return {"state": "serving", "endpoint": view["endpoint"], "link": view["link"],
                "kme_id": view["kme_id"], "clients": len(view["clients"]),
                "keys_issuable": view["pool"]["issuable"],
                "keys_reserved_for_peer": sum(r["keys"] for r in view["reservations"]),
                "requests": view["counters"]["requests"],
                "errors": view["counters"]["errors"],
                "keys_delivered": view["counters"]["keys_delivered"],
                "rejected_client_keys": view["rejected_client_keys"],
                "unacknowledged_voids": view["unacknowledged_voids"]}

    def _control_view(self, links: list[dict]) -> list[dict]:
        return links if self.control is None else self.control.annotate(links)

    def _status_line(self) -> str:
        # every 10 s on the event loop (systemd's STATUS): the links only, no store scan
        links = self._links_status()
        alarms = sum(len(ln.get("alarms", {})) for ln in links)
        return (f"{len(links)} link(s), {sum(ln['keys_stored'] for ln in links)} "
                f"keys stored, {alarms} alarm(s)")

    async def _status(self, _request: dict) -> dict:
        view = await self.keyservice.status_view() if self._keyservice_ready() else None
        return {"status": self.status(view)}

    async def _hold(self, request: dict) -> dict:
        held = request.get("held", True)
        if not isinstance(held, bool):
            raise ValueError("'held' must be true or false")
        for engine in self.engines.values():
            engine.hold(held)
        return {"held": held}

    async def _keyservice_view(self, _request: dict) -> dict:
        return {"keyservice": await self._running_keyservice().status_view()}

    async def _keyservice_reload(self, _request: dict) -> dict:
        runner = self._running_keyservice()
        try:
            new = cfg.load(self.config.source)
        except cfg.ConfigError as exc:
            raise ValueError(f"allow-list not reloaded, current one kept: {exc}") from None
        return {"clients": self._reload_clients(runner, new)}

    def _running_keyservice(self) -> KeyServiceRunner:
        if self.config.keyservice is None:
            raise ValueError("this node runs no key service (its config has no [keyservice])")
        if self.keyservice is None or not self._keyservice_started:
            raise ValueError("the key service is still starting; ask again shortly")
        return self.keyservice

    def _reload_clients(self, runner: KeyServiceRunner, new: cfg.NodeConfig) -> int:
        """Apply the new config's allow-list; ValueError (one line) keeps the old one."""
        if new.keyservice is None:
            raise ValueError("the config no longer has [keyservice]; stopping the key service "
                             "needs a restart, allow-list kept")
        runner.reload(new.keyservice.clients)
        self.config = dataclasses.replace(self.config, keyservice=dataclasses.replace(
            self.config.keyservice, clients=dict(new.keyservice.clients)))
        self.log.info("key service: allow-list reloaded, %d client(s)",
                      len(new.keyservice.clients))
        return len(new.keyservice.clients)

    async def _digest(self, request: dict) -> dict:
        nonce = bytes.fromhex(request["nonce"])
        if not 16 <= len(nonce) <= 64:
            raise ValueError(f"nonce of {len(nonce)} bytes; expected 16..64")
        loop = asyncio.get_running_loop()
        out = []
        for link in self.config.links:
            d = await loop.run_in_executor(self._compute, self.store.digest, link.id, nonce)
            out.append({"link": link.id, **dataclasses.asdict(d)})
        return {"links": out}

    def reload(self) -> None:
        try:
            new = cfg.load(self.config.source)
        except cfg.ConfigError as exc:
            self.log.error("reload refused, running config kept: %s", exc)
            return
        journal.set_level(new.log_level)
        if self.keyservice is not None and self._keyservice_started:
            try:
                self._reload_clients(self.keyservice, new)
            except ValueError as exc:
                self.log.error("key service: %s", exc)
        changed = [f.name for f in dataclasses.fields(new)
                   if f.name not in ("log_level",) and not _same(f.name, getattr(new, f.name),
                                                                 getattr(self.config, f.name))]
        self.config = dataclasses.replace(self.config, log_level=new.log_level)
        for hook in self.reload_hooks:
            hook(new)
        self.log.info("config reloaded: log level %s%s", new.log_level,
                      f"; changes to {', '.join(changed)} need a restart" if changed else "")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._compute = ThreadPoolExecutor(max(1, os.cpu_count() or 1),
                                           thread_name_prefix="qkd-compute")
        io_pools = {link.id: ThreadPoolExecutor(1, thread_name_prefix=f"qkd-io-{link.id}")
                    for link in self.config.links}
        admin = AdminServer(self.config.admin_socket, self.config.admin_socket_mode,
                            {"status": self._status, "digest": self._digest,
                             "hold": self._hold, "keyservice": self._keyservice_view,
                             "keyservice_reload": self._keyservice_reload})
        ks_pool = ThreadPoolExecutor(2, thread_name_prefix="qkd-keyservice")
        tasks: list[asyncio.Task] = []
        try:
            self.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            await loop.run_in_executor(None, self.devices.open, self.config.links)
            self.store = await loop.run_in_executor(None, self.ports.store, self.config)
            if self._control_factory is not None:
                self.control = self._control_factory(self.config, self.devices.links, self.log)
            roles = self.ports.roles(self.config)
            if self.config.keyservice is not None:
                self.keyservice = KeyServiceRunner(
                    self.config.keyservice, self.store, self._keyservice_send,
                    key_size_bits=self.config.keystore.key_size_bits, executor=ks_pool)
            for link in self.config.links:
                self.engines[link.id] = self._engine(link, roles, io_pools[link.id])
            await admin.start()
            tasks = [asyncio.create_task(self._supervise(link, roles, io_pools[link.id]),
                                         name=f"link-{link.id}")
                     for link in self.config.links]
            if self.control is not None:
                tasks.append(asyncio.create_task(self.control.run(), name="control"))
            if self.keyservice is not None:
                await self._start_keyservice()
            tasks.append(asyncio.create_task(notify.serve(self._stop, self.healthy,
                                                          self._status_line), name="notify"))
            self.log.info("node %s running: %d link(s), admin socket %s", self.config.node_id,
                          len(self.config.links), self.config.admin_socket)
            await self._stop.wait()
        finally:
            if self.keyservice is not None:       # before the peer channel: its VOID needs it
                await self._close_keyservice()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await admin.close()
            await loop.run_in_executor(None, self.devices.close)
            close = getattr(self.store, "close", None)
            if close is not None:
                await loop.run_in_executor(None, close)
            for pool in (self._compute, ks_pool, *io_pools.values()):
                pool.shutdown(wait=True, cancel_futures=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.log.info("node %s stopped", self.config.node_id)

    def _on_stop_signal(self, sig: int) -> None:
        self.log.info("%s: stopping", signal.Signals(sig).name)
        self.stop()

    async def _start_keyservice(self) -> None:
        ks = self.config.keyservice
        try:
            await self.keyservice.start()
        except (ServiceStartError, StoreError, OSError) as exc:    # closed by run()'s finally
            why = str(exc).removeprefix("key service: ")
            raise KeyServiceUnavailable(f"key service on {ks.endpoint} (link {ks.link_id}) "
                                        f"cannot start: {why}") from None
        self._keyservice_started = True

    async def _close_keyservice(self) -> None:
        try:
            await asyncio.wait_for(self.keyservice.close(), KEYSERVICE_CLOSE_S)
        except Exception as exc:     # the links and the store still close after it
            self.log.error("key service: closing failed: %s: %s", type(exc).__name__, exc)
        self._keyservice_started = False

    async def _keyservice_send(self, msg_type: int, payload: bytes) -> None:
        """To the peer's key service over the link's channel as it runs now."""
        engine = self.engines.get(self.config.keyservice.link_id)
        if engine is None:
            raise ConnectionError("the key service's link is not running")
        await engine.channel.send_service(msg_type, payload)

    def _engine(self, link: cfg.LinkConfig, roles, io) -> LinkEngine:
        channel = self.ports.channel(self.config, link)
        ks = self.config.keyservice
        if ks is not None and ks.link_id == link.id:
            if not hasattr(channel, "divert"):
                raise MissingComponent(f"link {link.id}: this build's peer channel cannot carry "
                                       f"the key service's messages")
            channel.divert(KEYSERVICE_TYPES, self.keyservice.on_peer_message,
                           self.keyservice.peer_connected)
        return LinkEngine(link, self.config.keystore, node_id=self.config.node_id,
                          board=self.devices.links[link.id]["board"],
                          channel=channel, store=self.store,
                          roles=roles, compute=self._compute, io=io,
                          acquisition_factory=self.ports.acquisition, control=self.control)

    async def _supervise(self, link: cfg.LinkConfig, roles, io) -> None:
        delay = RESTART_FIRST_S
        while True:
            engine = self.engines[link.id]
            try:
                await engine.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error("link %s failed: %s: %s; restarting in %g s", link.id,
                               type(exc).__name__, exc, delay)
                engine.figures.state = f"failed: {type(exc).__name__}: {exc}"
                await asyncio.sleep(delay)
                delay = min(2 * delay, RESTART_MAX_S)
                self.engines[link.id] = self._engine(link, roles, io)


def _same(name: str, new, old) -> bool:
    """Equal for the reload's purpose: the key service's clients change live."""
    if name == "keyservice" and new is not None and old is not None:
        return dataclasses.replace(new, clients={}) == dataclasses.replace(old, clients={})
    return new == old


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkd-node run",
                                     description="run one QKD node (until SIGTERM/SIGINT)")
    parser.add_argument("--config", required=True, help="the node's node.toml")
    return parser


def main(argv: list[str] | None = None, ports: Ports | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = cfg.load(args.config)
    except cfg.ConfigError as exc:
        print(f"qkd-node run: error: {exc}", file=sys.stderr)
        return 2
    log = journal.setup(config.log_level)
    try:
        node = Node(config, ports or real_ports(), log)
        asyncio.run(node.run())
    except (MissingComponent, DeviceSetupError, AdminSocketError, KeyServiceUnavailable) as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot run: %s", exc)
        return 1
    return 0
