"""QKD timing board drivers (firmware_protocol over a byte transport)."""

from drivers.board.qkd_board import BatchesLost, BatchGap, BoardIdentity, QkdBoard, StreamStats

__all__ = ["BatchGap", "BatchesLost", "BoardIdentity", "QkdBoard", "StreamStats"]
