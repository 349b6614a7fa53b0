"""Per-link pipeline: acquisition, the block roles driven over the peer channel, the commit."""
