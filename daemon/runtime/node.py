"""``qkd-node run --config FILE``: the node process, and the composition root that builds it.

One asyncio loop: per link an engine task (restarted with backoff if it fails, so one broken
link never takes the node down), the admin socket, and the signal handlers — SIGTERM and SIGINT
stop cleanly (blocks in flight are abandoned; their keys were never deliverable and the next
hello resolves them), SIGHUP re-reads the config and applies what can change live (the log
level; the rest is named as needing a restart). Kernels run in a thread pool sized to the
machine; each link's board I/O has its own thread.

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
from daemon.runtime import journal, notify
from daemon.runtime.admin import AdminServer, AdminSocketError
from daemon.runtime.wiring import MissingComponent, Ports, real_ports

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0


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

    def stop(self) -> None:
        self._stop.set()

    def healthy(self) -> bool:
        """Every link engine alive (the watchdog of the next issue pings only then)."""
        return all(e.figures.state not in ("stopped",) and not e.figures.state.startswith(
            "failed") for e in self.engines.values()) and (
            self.control is None or self.control.healthy())

    def status(self) -> dict:
        return {"node": self.config.node_id, "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started_at, 3),
                "links": self._control_view([e.status() for e in self.engines.values()])}

    def _control_view(self, links: list[dict]) -> list[dict]:
        return links if self.control is None else self.control.annotate(links)

    def _status_line(self) -> str:
        s = self.status()
        alarms = sum(len(ln.get("alarms", {})) for ln in s["links"])
        return (f"{len(s['links'])} link(s), {sum(ln['keys_stored'] for ln in s['links'])} "
                f"keys stored, {alarms} alarm(s)")

    async def _status(self, _request: dict) -> dict:
        return {"status": self.status()}

    async def _hold(self, request: dict) -> dict:
        held = request.get("held", True)
        if not isinstance(held, bool):
            raise ValueError("'held' must be true or false")
        for engine in self.engines.values():
            engine.hold(held)
        return {"held": held}

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
        changed = [f.name for f in dataclasses.fields(new)
                   if f.name not in ("log_level",) and getattr(new, f.name) !=
                   getattr(self.config, f.name)]
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
                             "hold": self._hold})
        tasks: list[asyncio.Task] = []
        try:
            self.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            await loop.run_in_executor(None, self.devices.open, self.config.links)
            self.store = await loop.run_in_executor(None, self.ports.store, self.config)
            if self._control_factory is not None:
                self.control = self._control_factory(self.config, self.devices.links, self.log)
            roles = self.ports.roles(self.config)
            for link in self.config.links:
                self.engines[link.id] = self._engine(link, roles, io_pools[link.id])
            await admin.start()
            tasks = [asyncio.create_task(self._supervise(link, roles, io_pools[link.id]),
                                         name=f"link-{link.id}")
                     for link in self.config.links]
            if self.control is not None:
                tasks.append(asyncio.create_task(self.control.run(), name="control"))
            tasks.append(asyncio.create_task(notify.serve(self._stop, self.healthy,
                                                          self._status_line), name="notify"))
            self.log.info("node %s running: %d link(s), admin socket %s", self.config.node_id,
                          len(self.config.links), self.config.admin_socket)
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await admin.close()
            await loop.run_in_executor(None, self.devices.close)
            close = getattr(self.store, "close", None)
            if close is not None:
                await loop.run_in_executor(None, close)
            for pool in (self._compute, *io_pools.values()):
                pool.shutdown(wait=True, cancel_futures=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.log.info("node %s stopped", self.config.node_id)

    def _on_stop_signal(self, sig: int) -> None:
        self.log.info("%s: stopping", signal.Signals(sig).name)
        self.stop()

    def _engine(self, link: cfg.LinkConfig, roles, io) -> LinkEngine:
        return LinkEngine(link, self.config.keystore, node_id=self.config.node_id,
                          board=self.devices.links[link.id]["board"],
                          channel=self.ports.channel(self.config, link), store=self.store,
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
    except (MissingComponent, DeviceSetupError, AdminSocketError) as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot run: %s", exc)
        return 1
    return 0
