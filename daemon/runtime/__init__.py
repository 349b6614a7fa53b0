"""The node process: composition root, logging, admin socket, signals."""
