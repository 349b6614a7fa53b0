"""Polarization controllers at Bob (slow actuators for fibre-drift compensation), one per model."""
