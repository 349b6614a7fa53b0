"""A link's control settings (node.toml ``[link.control]``), with their accepted ranges.

The ranges live here once: ``ControlSettings`` checks them when built in code, and
``daemon.config`` reads the same table to check node.toml (its errors name the file and key).
The loops' finer settings keep their defaults; these are the ones an operator may need to
change per link: how often each loop runs, which switch port carries the link, the light floor
and how long a port must stay dark before it is called dark,
how far the reference may stray before it is re-locked, and the twist steering of the GP loop.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from daemon.control.common import ControlConfigError, check_range

# name -> (lowest, highest, integer, unit): what node.toml and ControlSettings accept.
RANGES: dict[str, tuple[float, float, bool, str]] = {
    "detector_period_s": (0.001, 3600.0, False, "s"),
    "switch_period_s": (0.001, 3600.0, False, "s"),
    "polarization_period_s": (0.001, 3600.0, False, "s"),
    "probe_period_s": (0.001, 3600.0, False, "s"),
    "veto_wait_s": (0.0, 3600.0, False, "s"),
    "acquisition_gap_s": (0.0, 3600.0, False, "s"),
    "switch_port": (1, 64, True, ""),
    "light_floor_hz": (0.0, 1e12, False, "Hz"),
    "dark_confirm_s": (0.0, 3600.0, False, "s"),
    "reissue_threshold_deg": (0.0, 90.0, False, "deg"),
    "twist_dither_rad": (0.001, 0.5, False, "rad"),
    "twist_dither_min_rad": (0.001, 0.5, False, "rad"),
}
BOOLEANS = ("steer_twist",)


@dataclass(frozen=True)
class ControlSettings:
    detector_period_s: float = 0.5
    switch_period_s: float = 1.0
    polarization_period_s: float = 1.0
    probe_period_s: float = 10.0        # OZ: prove the unit answers while no QBER arrives
    veto_wait_s: float = 5.0            # a block waits this long for a clean detector reading
    acquisition_gap_s: float = 1.0      # a pause between blocks shorter than this is no idle
    switch_port: int = 1                # the switch port that carries this link
    light_floor_hz: float = 1.0e4       # total click rate below this while acquiring: no light
    dark_confirm_s: float = 5.0         # ... in every gate judged for this long: no_light
    reissue_threshold_deg: float = 2.0  # GP: re-lock the reference once it strays this far
    steer_twist: bool = True            # GP: steer the twist about the reference on X QBER
    twist_dither_rad: float = 0.08      # GP: its largest dither (chosen per cycle from stats)
    twist_dither_min_rad: float = 0.02  # GP: its smallest dither

    def __post_init__(self):
        for name, (lo, hi, integer, unit) in RANGES.items():
            value = getattr(self, name)
            if integer and (isinstance(value, bool) or not isinstance(value, int)):
                raise ControlConfigError(f"{name} = {value!r} must be an integer in "
                                         f"[{lo:g}, {hi:g}]")
            check_range(name, value, lo, hi, unit)
        for name in BOOLEANS:
            if not isinstance(getattr(self, name), bool):
                raise ControlConfigError(f"{name} = {getattr(self, name)!r}: expected True or "
                                         f"False")
        if self.twist_dither_min_rad > self.twist_dither_rad:
            raise ControlConfigError(f"twist_dither_min_rad = {self.twist_dither_min_rad!r} "
                                     f"must not exceed twist_dither_rad = "
                                     f"{self.twist_dither_rad!r}")


NAMES = tuple(f.name for f in fields(ControlSettings))
