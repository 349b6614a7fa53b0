"""Key delivery to applications over ZeroMQ: ETSI GS QKD 014 and 004 semantics."""
