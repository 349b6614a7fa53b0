"""Simulated General Photonics/Luna polarization synthesizer speaking its SCPI dialect.

It sits at Bob after the fibre. ``:CONT:SOP``/``:CONT:ANGL`` lock the state of the reference
light (``controls.reference_sop``, Alice's H unless asked otherwise) to the target: like a
feedback synthesizer moving its waveplates from where they are, the controller rotation is
composed with the smallest rotation taking the reference's present output state to the target,
once per command (the fibre then keeps drifting: the node's loop re-issues the target).
``:MEAS:SOP?`` reports ``controller_rotation @ fibre_rotation @ reference``, which drifts away
until the next command. One reference fixes two of the three rotation angles; the twist about
it is left as it was. Locking a second, non-orthogonal reference next (D after H) corrects by a
rotation about the first one's axis, so two references locked in turn fix the whole rotation.
"""

from __future__ import annotations

import math

import numpy as np

from sim_backend.controls import LinkControls
from sim_backend.instruments.base import LineInstrument
from sim_backend.instruments.polarization_rotations import (H, angles_from_stokes,
                                                            rotation_taking, stokes_from_angles)

IDN = "General Photonics,PSY-201 (simulated),SIM00001,1.0"


class ScpiCommandError(Exception):
    def __init__(self, code: int, message: str):
        self.code, self.message = code, message
        super().__init__(f'{code},"{message}"')


def _numbers(args: str, count: int) -> list[float]:
    if not args:
        raise ScpiCommandError(-109, "Missing parameter")
    try:
        values = [float(v) for v in args.split(",")]
    except ValueError:
        raise ScpiCommandError(-104, "Data type error") from None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ScpiCommandError(-108 if len(values) > count else -109,
                               "Parameter not allowed" if len(values) > count
                               else "Missing parameter")
    return values


class GpPolarizationSim(LineInstrument):
    ERROR_QUEUE_DEPTH = 16

    def __init__(self, controls: LinkControls | None = None):
        super().__init__()
        self.controls = controls if controls is not None else LinkControls()
        self.target = H.copy()
        self.errors: list[tuple[int, str]] = []

    def handle_line(self, line: str):
        command, _, args = line.strip().partition(" ")
        header = command.upper().lstrip(":")
        args = args.strip()
        handler = self._commands().get(header)
        try:
            if handler is None:
                raise ScpiCommandError(-113, "Undefined header")
            return handler(args)
        except ScpiCommandError as exc:
            if len(self.errors) < self.ERROR_QUEUE_DEPTH:
                self.errors.append((exc.code, exc.message))
            return None

    def _commands(self):
        return {
            "*IDN?": lambda a: IDN,
            "*RST": self._reset,
            "*CLS": lambda a: self.errors.clear(),
            "SYST:ERR?": self._next_error,
            "CONT:SOP": self._set_sop,
            "CONT:SOP?": lambda a: self._format(self.target),
            "CONT:ANGL": self._set_angles,
            "CONT:ANGL?": lambda a: "{:.2f},{:.2f}".format(*angles_from_stokes(self.target)),
            "MEAS:SOP?": lambda a: self._format(self.measured_sop()),
        }

    @staticmethod
    def _format(s) -> str:
        return ",".join(f"{float(v):.5f}" for v in s)

    def _next_error(self, _args):
        if not self.errors:
            return '0,"No error"'
        code, message = self.errors.pop(0)
        return f'{code},"{message}"'

    def _reset(self, _args):
        self._lock_to(H)

    def power_on(self) -> None:
        """Without power the synthesizer's waveplates relax: no rotation, target forgotten."""
        with self.controls.lock:
            self.controls.controller_rotation = np.eye(3)
        self.target = H.copy()
        self.errors.clear()

    def _set_sop(self, args: str):
        s = np.array(_numbers(args, 3))
        norm = float(np.linalg.norm(s))
        if not all(-1.0 <= v <= 1.0 for v in s) or not 0.9 <= norm <= 1.1:
            raise ScpiCommandError(-222, "Data out of range")
        self._lock_to(s / norm)

    def _set_angles(self, args: str):
        theta, phi = _numbers(args, 2)
        if not (0.0 <= theta < 360.0 and -90.0 <= phi <= 90.0):
            raise ScpiCommandError(-222, "Data out of range")
        self._lock_to(stokes_from_angles(theta, phi))

    def _lock_to(self, target: np.ndarray) -> None:
        with self.controls.lock:
            c = self.controls
            arriving = c.controller_rotation @ c.fibre_rotation @ c.reference_sop
            c.controller_rotation = rotation_taking(arriving, target) @ c.controller_rotation
        self.target = np.asarray(target, dtype=float)

    def measured_sop(self) -> np.ndarray:
        with self.controls.lock:
            return self.controls.net_rotation() @ self.controls.reference_sop
