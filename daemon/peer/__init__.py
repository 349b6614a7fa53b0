"""The authenticated classical channel between two nodes (docs/peer-protocol.md).

``envelope`` (sans-I/O codec and Wegman-Carter tag), ``auth_keys`` (the pool the tags' keys and
pads come from), ``session`` (sequence numbers, hellos, rejections; sans-I/O) and ``channel``
(the CurveZMQ socket adapter the engine uses).
"""
