"""Runs the control loops of a node on its event loop, and answers the engine and the watchdog.

One ``LinkSupervisor`` per link holds the adapters built from the link's devices (by role name:
``detector``, ``switch``, ``polarization``) and ticks each at its period; drivers block, so every
tick runs in the link's own control thread, never on the event loop. It answers three questions:

- ``key_veto(t0, t1)``: may a block acquired over ``t0..t1`` give key? The detector ledger must
  show a clean reading after ``t1`` and no alarm touching the window; the engine waits up to
  ``veto_wait_s`` for that reading, then refuses (``detector_unverified``). No detector, no veto.
- ``healthy()``: every adapter ticked recently and its device answers (the systemd watchdog is
  fed only then). A stalled event loop stops the ticks, so it turns unhealthy too.
- ``status()``: each loop's state, last action and alarms, for ``qkd-node status``.

The engine also hands each finished block's QBER to ``block_finished``: the OZ dialect steers on
it, the GP dialect steers the twist about its reference on the X-basis figure and compares the
bases with it. And it says when it collects a block (``acquiring(True)`` before, ``False``
after): light is expected only then, so the switch's light check (and a detector rate floor)
judges only a gate that lies wholly inside a run of collection, pauses between blocks shorter
than ``acquisition_gap_s`` included. An idle link (no peer, held, store full) is not dark.
Each link's settings come from its ``[link.control]`` table (``daemon.control.settings``).
``ControlSupervisor`` is the node-wide face the runtime sees: one object, per-link dispatch.
All times are ``clock()`` seconds (monotonic by default), the clock the engine stamps its acquisition windows with; detector drivers that
stamp their own readings are given the same clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from daemon.control.adapters import (DetectorAdapter, GpAdapter, LoopAdapter, OzAdapter,
                                     SwitchAdapter)
from daemon.control.common import QberWindow
from daemon.control.detector import AlarmCleared, AlarmRaised, DetectorConfig, DetectorLoop
from daemon.control.polarization import H_REF, GpConfig, GpLoop
from daemon.control.settings import ControlSettings
from daemon.control.switch import SwitchConfig, SwitchLoop

VETO_ALARM = "detector_alarm"
VETO_UNVERIFIED = "detector_unverified"


__all__ = ["VETO_ALARM", "VETO_UNVERIFIED", "ControlSettings", "ControlSupervisor",
           "LinkSupervisor", "qber_window"]


class LinkSupervisor:
    def __init__(self, link_id: str, *, detector: DetectorAdapter | None = None,
                 switch: SwitchAdapter | None = None,
                 polarization: GpAdapter | OzAdapter | None = None,
                 settings: ControlSettings | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 log: logging.Logger | None = None):
        self.link_id = link_id
        self.detector, self.switch, self.polarization = detector, switch, polarization
        self.settings = settings or ControlSettings()
        self.clock = clock
        self.log = log or logging.getLogger(f"qkd.control.{link_id}")
        self._io = ThreadPoolExecutor(1, thread_name_prefix=f"qkd-ctl-{link_id}")
        self._last_qber: QberWindow | None = None
        self._tasks: list[asyncio.Task] = []
        self._running = False
        self._collecting = False
        self._run_start: float | None = None     # start of the present run of collection
        self._run_end: float | None = None       # end of the last block collected

    @property
    def adapters(self) -> list[LoopAdapter]:
        return [a for a in (self.detector, self.switch, self.polarization) if a is not None]

    # -- the questions ---------------------------------------------------------------------

    def healthy(self) -> bool:
        return all(a.healthy() for a in self.adapters)

    def status(self) -> dict:
        return {"healthy": self.healthy(),
                "loops": {a.name: a.status() for a in self.adapters}}

    def alarms(self) -> dict[str, str]:
        """Every loop's alarms, keyed ``control.<loop>.<alarm>``, for the link's alarm list."""
        out = {}
        for a in self.adapters:
            for name, text in a.status()["alarms"].items():
                out[f"control.{a.name}.{name}"] = text
        return out

    def acquiring(self, on: bool) -> None:
        """The engine begins (True) or ends (False) collecting a block."""
        now = self.clock()
        if on and not self._collecting:
            if self._run_end is None or now - self._run_end > self.settings.acquisition_gap_s:
                self._run_start = now            # a new run: the pause was idle time
            self._collecting = True
        elif not on and self._collecting:
            self._collecting = False
            self._run_end = now

    def acquiring_over(self, gate_start_s: float | None) -> bool:
        """Was light expected over the whole gate from ``gate_start_s`` to now? Only inside a
        run of collection (a gate of unknown start: only while collecting now)."""
        if self._run_start is None:
            return False
        now = self.clock()
        ongoing = self._collecting or now - self._run_end <= self.settings.acquisition_gap_s
        started = gate_start_s is not None and gate_start_s >= self._run_start
        return ongoing and (started or (gate_start_s is None and self._collecting))

    async def key_veto(self, t0_s: float, t1_s: float) -> str | None:
        """None: key may come from ``t0..t1``; else the abort reason."""
        det = self.detector
        if det is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.veto_wait_s
        while True:
            verdict = det.window_verdict(t0_s, t1_s)
            if verdict == "ok":
                return None
            if verdict == "alarm":
                return VETO_ALARM
            if loop.time() >= deadline:
                return VETO_UNVERIFIED
            await asyncio.sleep(min(0.05, self.settings.detector_period_s / 4))

    def block_finished(self, t0_s: float, t1_s: float, stats: dict | None) -> None:
        """A block's QBER (from its test sample) reaches the polarization loop."""
        window = qber_window(t0_s, t1_s, stats)
        if window is None:
            return
        self._last_qber = window
        if isinstance(self.polarization, OzAdapter) and self._running:
            oz = self.polarization
            task = asyncio.get_running_loop().create_task(
                self._run(oz, lambda: oz.tick(window, self.clock())))
            self._tasks.append(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        try:
            self._tasks.remove(task)
        except ValueError:
            pass

    # -- running ---------------------------------------------------------------------------

    def _jobs(self) -> list:
        """(adapter, period, blocking tick) for every periodic loop of the link."""
        s = self.settings
        jobs = []
        if self.detector is not None:
            det = self.detector
            jobs.append((det, s.detector_period_s,
                         lambda: det.tick(acquiring=self.acquiring_over)))
        if self.switch is not None:
            sw = self.switch
            jobs.append((sw, s.switch_period_s,
                         lambda: sw.tick(self.clock(), acquiring=self.acquiring_over)))
        pol = self.polarization
        if isinstance(pol, GpAdapter):
            jobs.append((pol, s.polarization_period_s,
                         lambda: pol.tick(self.clock(), self._last_qber)))
        elif isinstance(pol, OzAdapter):
            jobs.append((pol, s.probe_period_s, pol.probe))
        return jobs

    async def tick_once(self) -> None:
        """One tick of every periodic loop, in order (tests step link time with it)."""
        for adapter, _, fn in self._jobs():
            await self._run(adapter, fn)

    async def run(self) -> None:
        """Tick every loop at its period until cancelled."""
        self._running = True
        try:
            await asyncio.gather(*(self._every(a, p, fn) for a, p, fn in self._jobs()))
        finally:
            self._running = False
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(self, adapter: LoopAdapter, period_s: float, fn) -> None:
        while True:
            await self._run(adapter, fn)
            await asyncio.sleep(period_s)

    async def _run(self, adapter: LoopAdapter, fn) -> None:
        was_lost = adapter.device_error is not None
        try:
            action = await asyncio.get_running_loop().run_in_executor(self._io, fn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:        # a bug in a loop must not end the others
            self.log.error("link %s: control loop %s failed: %s: %s", self.link_id,
                           adapter.name, type(exc).__name__, exc)
            return
        self._report(adapter, action, was_lost)

    def _report(self, adapter: LoopAdapter, action, was_lost: bool) -> None:
        lost = adapter.device_error
        if lost is not None and not was_lost:
            self.log.error("link %s: ALARM %s device lost: %s", self.link_id, adapter.name, lost)
        elif lost is None and was_lost:
            self.log.warning("link %s: %s answers again", self.link_id, adapter.name)
        if isinstance(action, AlarmRaised):
            self.log.warning("link %s: ALARM detector %s: no key from this window",
                             self.link_id, action.describe())
        elif isinstance(action, AlarmCleared):
            self.log.warning("link %s: detector %s", self.link_id, action.describe())
        elif action is not None:
            self.log.info("link %s: %s: %s", self.link_id, adapter.name, action.describe())

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)


def qber_window(t0_s: float, t1_s: float, stats: dict | None) -> QberWindow | None:
    """A block's test sample as a QBER window (basis-resolved when the block says so)."""
    if not stats:
        return None
    n, q = stats.get("sample_bits"), stats.get("qber_estimate")
    if not isinstance(n, (int, float)) or not isinstance(q, (int, float)) or n <= 0 \
            or not math.isfinite(q):
        return None
    kw = {}
    qb, nb = stats.get("qber_by_basis") or [], stats.get("sample_by_basis") or []
    for b, name in enumerate("zx"):      # a basis not measured (decoy: Z before EC) is left out
        if b < min(len(qb), len(nb)) and isinstance(qb[b], (int, float)) \
                and isinstance(nb[b], (int, float)) and math.isfinite(qb[b]) and nb[b] > 0:
            kw[f"sifted_{name}"] = int(nb[b])
            kw[f"errors_{name}"] = int(round(qb[b] * nb[b]))
    return QberWindow(float(t0_s), float(t1_s), int(n), int(round(q * n)), **kw)


def _supervisor_for(link, devices: dict, settings: ControlSettings, clock, log,
                    select_reference=None) -> LinkSupervisor:
    """Adapters for the link's devices, found by role name and what the driver can do."""
    det = devices.get("detector")
    detector = None
    if det is not None and hasattr(det, "read_telemetry"):
        if hasattr(det, "clock"):
            det.clock = clock          # the ledger and the engine's windows share one clock
        detector = DetectorAdapter(f"{link.id}.detector", det, DetectorLoop(DetectorConfig(
            dead_time_ns=_dead_time_ns(det, log))), clock=clock)
    switch = None
    sw = devices.get("switch")
    if sw is not None and hasattr(sw, "select_port") and hasattr(sw, "port"):
        switch = SwitchAdapter(f"{link.id}.switch", sw, SwitchLoop(SwitchConfig(
            port=settings.switch_port, n_ports=max(8, settings.switch_port),
            light_floor_hz=settings.light_floor_hz, dark_confirm_s=settings.dark_confirm_s)),
            _rate_from(detector), clock=clock)
    pol = devices.get("polarization")
    polarization = None
    if pol is not None and hasattr(pol, "measure_sop"):
        # A node's one reference (Alice's H): locked on the polarimeter, the twist about it
        # steered on the X-basis QBER. Only an in-process selector allows two references.
        polarization = GpAdapter(f"{link.id}.polarization", pol, GpLoop(GpConfig(
            references=(H_REF,) if select_reference is None else GpConfig().references,
            reissue_threshold_deg=settings.reissue_threshold_deg,
            steer_twist=settings.steer_twist, twist_dither_rad=settings.twist_dither_rad,
            twist_dither_min_rad=settings.twist_dither_min_rad)),
            select_reference=select_reference, clock=clock)
    elif pol is not None and hasattr(pol, "voltages_mv"):
        polarization = OzAdapter(f"{link.id}.polarization", pol, clock=clock)
    return LinkSupervisor(link.id, detector=detector, switch=switch, polarization=polarization,
                          settings=settings, clock=clock, log=log)


def _dead_time_ns(det, log) -> float:
    """The dead time the detector is set to, which its saturation check multiplies the click
    rate by (fast detectors would otherwise be judged with the loop's default); the default
    when the driver cannot say."""
    default = DetectorConfig().dead_time_ns
    if not hasattr(type(det), "dead_time_ns"):
        return default
    try:
        value = float(det.dead_time_ns)
    except Exception as exc:      # any driver's read error: the check keeps its default
        (log or logging.getLogger("qkd.control")).warning(
            "detector dead time unreadable (%s); saturation judged at %g ns", exc, default)
        return default
    return value if 0.0 <= value <= 1e6 else default


def _rate_from(detector: DetectorAdapter | None):
    """The switch's light check: the detector unit's total click rate over its last gate."""
    def rate():
        if detector is None:
            return None, None
        last, before = detector.last_readings()
        if last is None:
            return None, None
        return float(sum(last.count_rate_hz)), (before.timestamp_s if before is not None
                                               else None)
    return rate


class ControlSupervisor:
    """The node's control loops, one ``LinkSupervisor`` per link (Bob's links have devices)."""

    def __init__(self, links: dict[str, LinkSupervisor], log: logging.Logger | None = None):
        self.links = links
        self.log = log or logging.getLogger("qkd.control")

    @classmethod
    def for_node(cls, config, devices_by_link: dict[str, dict], log=None,
                 settings: ControlSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> "ControlSupervisor":
        """Each Bob link's loops, with its ``[link.control]`` settings (``settings`` given
        here overrides them: tests)."""
        links = {}
        for link in config.links:
            if link.role != "bob":
                continue                 # Alice has no detectors, switch or controller to steer
            own = settings or getattr(link, "control", None) or ControlSettings()
            links[link.id] = _supervisor_for(link, devices_by_link.get(link.id, {}), own,
                                             clock, log)
        return cls(links, log)

    def healthy(self) -> bool:
        return all(s.healthy() for s in self.links.values())

    def status(self) -> dict:
        return {link_id: s.status() for link_id, s in self.links.items()}

    def annotate(self, link_statuses: list[dict]) -> list[dict]:
        """Add each link's loops (``control``) and their alarms to its status dict."""
        for ln in link_statuses:
            sup = self.links.get(ln.get("link"))
            if sup is not None:
                ln["control"] = sup.status()
                ln.setdefault("alarms", {}).update(sup.alarms())
        return link_statuses

    async def key_veto(self, link_id: str, t0_s: float, t1_s: float) -> str | None:
        sup = self.links.get(link_id)
        return None if sup is None else await sup.key_veto(t0_s, t1_s)

    def block_finished(self, link_id: str, t0_s: float, t1_s: float,
                       stats: dict | None) -> None:
        sup = self.links.get(link_id)
        if sup is not None:
            sup.block_finished(t0_s, t1_s, stats)

    def acquiring(self, link_id: str, on: bool) -> None:
        """The engine begins (True) or ends (False) collecting a block on ``link_id``."""
        sup = self.links.get(link_id)
        if sup is not None:
            sup.acquiring(on)

    async def run(self) -> None:
        try:
            await asyncio.gather(*(s.run() for s in self.links.values()))
        finally:
            for s in self.links.values():
                s.close()
