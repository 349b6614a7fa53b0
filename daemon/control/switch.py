"""Optical switch at Bob: hold the configured link port and check that light arrives.

A non-latching MEMS switch falls back to port 1 when it loses power, and anyone with a serial
cable can move it; the link then goes dark while every device still answers. Each step compares
the port the switch reports with the configured one (a mismatch is corrected at once), and once
the mirror has settled it checks the click rate measured since: below the floor on the right
port means no light (a fibre pulled, Alice off, a stuck mirror), so the port is selected again
every ``retry_s`` and the alarm stays until light returns. The loop never adopts another port
that happens to carry light: that fibre belongs to another link.

One dark gate proves nothing. The count gate runs on its own period, and the event stream
stalls at block boundaries while Bob aligns a block and before he reads the next one (the
simulator's world stands still until Bob drains it; a real board's buffer fills): a gate that
straddles such a stall counts few or no clicks though the link is healthy. A pulled fibre stays
dark, so ``no_light`` is raised only once every gate judged for ``dark_confirm_s`` was dark; a
lit gate, or a gate not judged (idle link, mirror moving), starts the count again.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.control.common import ControlConfigError, check_range, loop_status


@dataclass(frozen=True)
class SwitchReading:
    t_s: float
    port: int                          # as the switch reports it
    count_rate_hz: float | None        # total click rate over rate_since_s..t_s
    rate_since_s: float | None = None  # start of the gate the rate was measured over
    acquiring: bool = True             # light is expected only while the link acquires


@dataclass(frozen=True)
class SelectPort:
    port: int

    def describe(self) -> str:
        return f"select port {self.port}"


@dataclass(frozen=True)
class SwitchConfig:
    port: int
    n_ports: int = 8
    light_floor_hz: float = 1.0e4      # well above the dark-count rate of the four detectors
    settle_s: float = 0.05             # mirror switching + settling before light is judged
    retry_s: float = 5.0               # re-select a dark port this often
    dark_confirm_s: float = 5.0        # dark over judged gates this long before no_light

    def __post_init__(self):
        if isinstance(self.n_ports, bool) or not isinstance(self.n_ports, int) \
                or not 2 <= self.n_ports <= 64:
            raise ControlConfigError(f"n_ports = {self.n_ports!r} is outside the accepted "
                                     f"range [2, 64]")
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 1 <= self.port <= self.n_ports:
            raise ControlConfigError(f"port = {self.port!r} is outside the accepted range "
                                     f"[1, {self.n_ports}]")
        check_range("light_floor_hz", self.light_floor_hz, 0.0, 1e12, "Hz")
        check_range("settle_s", self.settle_s, 0.0, 60.0, "s")
        check_range("retry_s", self.retry_s, 0.0, 86400.0, "s")
        check_range("dark_confirm_s", self.dark_confirm_s, 0.0, 3600.0, "s")


@dataclass(frozen=True)
class SwitchState:
    mode: str = "starting"            # starting | verifying | ok | no_light
    selected_at_s: float | None = None
    corrections: int = 0              # wrong ports found and corrected
    last_action: str | None = None
    alarms: tuple[tuple[str, str], ...] = ()
    dark_since_s: float | None = None  # start of the unbroken run of dark judged gates


class SwitchLoop:
    def __init__(self, config: SwitchConfig):
        self.config = config

    def initial_state(self) -> SwitchState:
        return SwitchState()

    def step(self, state: SwitchState, r: SwitchReading) -> tuple[SwitchState, SelectPort | None]:
        c = self.config
        alarms = dict(state.alarms)
        if r.port != c.port:
            alarms["wrong_port"] = f"switch reported port {r.port}, configured {c.port}: reselected"
            act = SelectPort(c.port)
            return SwitchState("verifying", r.t_s, state.corrections + 1, act.describe(),
                               tuple(alarms.items())), act
        selected = state.selected_at_s
        if state.mode == "starting":
            # Already on the right port (we moved nothing): judge the light at once.
            since = r.t_s if r.rate_since_s is None else min(r.t_s, r.rate_since_s)
            selected = since - c.settle_s
        settled = selected is not None and r.t_s - selected >= c.settle_s and (
            r.rate_since_s is None or r.rate_since_s >= selected + c.settle_s)
        if not r.acquiring or r.count_rate_hz is None or not settled:
            mode = "verifying" if state.mode == "starting" else state.mode
            return SwitchState(mode, selected, state.corrections, state.last_action,
                               tuple(alarms.items())), None
        if r.count_rate_hz >= c.light_floor_hz:
            alarms.pop("no_light", None)
            alarms.pop("wrong_port", None)
            return SwitchState("ok", selected, state.corrections, state.last_action,
                               tuple(alarms.items())), None
        gate_start = r.t_s if r.rate_since_s is None else min(r.t_s, r.rate_since_s)
        dark_since = gate_start if state.dark_since_s is None else state.dark_since_s
        if "no_light" not in alarms and r.t_s - dark_since < c.dark_confirm_s:
            # Dark so far, but not long enough to tell a dark fibre from a stalled stream.
            mode = "verifying" if state.mode == "starting" else state.mode
            return SwitchState(mode, selected, state.corrections, state.last_action,
                               tuple(alarms.items()), dark_since), None
        alarms["no_light"] = (f"click rate {r.count_rate_hz:.3g} Hz on port {c.port} is below "
                              f"the floor {c.light_floor_hz:.3g} Hz for "
                              f"{r.t_s - dark_since:.1f} s")
        if r.t_s - selected >= c.retry_s:
            act = SelectPort(c.port)
            return SwitchState("no_light", r.t_s, state.corrections, act.describe(),
                               tuple(alarms.items())), act
        return SwitchState("no_light", selected, state.corrections, state.last_action,
                           tuple(alarms.items()), dark_since), None

    def status(self, state: SwitchState) -> dict:
        return loop_status(state.mode, state.last_action, dict(state.alarms),
                           port=self.config.port, corrections=state.corrections,
                           dark_since_s=state.dark_since_s)
