"""Logging to stderr, one event per line, with levels journald understands.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with the syslog priority ``<N>``, which
journald turns into the entry's level; in a terminal a line is ``time LEVEL logger: message``.
Messages never hold key material (the engine logs counts, IDs and reasons only); a message
with line breaks is folded onto one line so one event stays one line.
"""

from __future__ import annotations

import logging
import os
import sys
import time

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE,
          "warning": logging.WARNING, "error": logging.ERROR}
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, NOTICE: 5, logging.WARNING: 4,
                    logging.ERROR: 3, logging.CRITICAL: 2}


class OneLineFormatter(logging.Formatter):
    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            exc = record.exc_info[1]
            msg = f"{msg}: {type(exc).__name__}: {exc}"
        msg = " | ".join(part for part in msg.splitlines() if part.strip()) or msg
        if self.journal:
            prio = _SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < 30 else 3)
            return f"<{prio}>{record.name}: {msg}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}Z {record.levelname:<7} {record.name}: {msg}"


def setup(level: str = "info", stream=None) -> logging.Logger:
    """Route the ``qkd`` loggers to stderr; returns the node's logger."""
    root = logging.getLogger("qkd")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    root.propagate = False
    return logging.getLogger("qkd.node")


def set_level(level: str) -> None:
    logging.getLogger("qkd").setLevel(LEVELS[level])
