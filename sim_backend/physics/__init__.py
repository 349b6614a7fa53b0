"""Kernels of the simulated link, one module per physical stage.

``source`` (Alice's prepared states and photon numbers), ``channel`` (fibre loss and the
polarization random walk), ``eve`` (what an eavesdropper resends), ``detectors`` (Bob's
analysers, dark counts, dead time and afterpulsing), ``sampling`` (the event-driven thinning
kernels and their counter RNG) and ``theory`` (closed-form expectations for tests and reports).
"""
