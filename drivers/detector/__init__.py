"""Single-photon detector drivers and the telemetry checks that spot blinding."""
