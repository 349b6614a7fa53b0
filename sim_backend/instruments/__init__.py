"""Simulated instruments that speak the real wire dialects over TCP and ptys (see ``base``)."""
