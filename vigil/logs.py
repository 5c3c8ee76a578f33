"""Log set-up of the daemons (``vigil agent``, ``vigil api``): to stderr, which systemd
sends to the journal.

Under systemd (``JOURNAL_STREAM`` set, as for every unit whose stderr is the journal) each
line starts with its syslog priority, ``<3>`` for an error, which journald turns into the
entry's PRIORITY field (so ``journalctl -p warning -u vigil-agent`` works), and carries no
timestamp, since the journal keeps its own. Elsewhere (the lab, a terminal) lines carry a
timestamp. Each line is ``logger: message`` with the logger's name (``vigil.agent.ft``,
``vigil.controller``), so one subsystem's lines can be picked out.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# syslog priorities (RFC 5424) of Python's levels
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; a traceback stays in the same entry's lines."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def under_journal(env: dict[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get("JOURNAL_STREAM"))


def setup_logging(level: int = logging.INFO, stream: TextIO | None = None,
                  env: dict[str, str] | None = None) -> logging.Handler:
    """Install one stderr handler on the root logger (replacing any earlier one)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if under_journal(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
