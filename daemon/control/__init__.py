"""Control loops that keep a link at its best without an operator.

Each loop is a pure step, ``loop.step(state, telemetry) -> (state, action)``: frozen dataclasses
in and out, no I/O, no clock, so every decision is unit-tested without a device. The adapters in
``daemon.control.adapters`` are the only code that talks to drivers: they read a device's
telemetry, call the step and apply the action. ``loop.status(state)`` gives the small dict that
``qkd-node status`` shows (``state``, ``last_action``, ``alarms``).

- ``polarization``: the GP dialect re-issues its target on the measured SOP and steers the
  twist about its one reference on the X-basis QBER of finished blocks; the OZ dialect (no
  polarimeter) runs a dither/gradient search on the QBER of successive windows.
- ``settings``: a link's ``[link.control]`` settings and their accepted ranges.
- ``detector``: count-rate ceilings and floors, photocurrent, bias sag, dead-time saturation,
  multi-clicks; an alarm ledger answers ``window_ok(t0, t1)`` for the engine.
- ``switch``: hold the configured port, verify light after switching, correct a wrong port.

The operator's view of all three is ``docs/operations.md``.
"""
