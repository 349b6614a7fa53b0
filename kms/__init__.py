"""The freight operator's key-management server and key cloud platform.

A client of the QKD node's key service (``daemon.keyservice.client``) and nothing else of the
daemon: security levels and per-service key pools at each site, classical keys imported beside
quantum ones, and vehicle terminals charged with one-time keys at the depot.
"""
