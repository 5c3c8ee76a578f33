"""Daemon logs: priorities for the journal under systemd, timestamps elsewhere."""
from __future__ import annotations

import io
import logging

from vigil.logs import setup_logging


def _log_lines(env: dict[str, str]) -> list[str]:
    out = io.StringIO()
    handler = setup_logging(stream=out, env=env)
    try:
        log = logging.getLogger("vigil.agent.ft")
        log.info("checkpoint 3 acked")
        log.warning("secondary slow")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("FT loop failed")
    finally:
        logging.getLogger().removeHandler(handler)
    return out.getvalue().splitlines()


def test_under_the_journal_every_line_carries_its_priority_and_no_timestamp():
    lines = _log_lines({"JOURNAL_STREAM": "8:12345"})
    assert lines[0] == "<6>vigil.agent.ft: checkpoint 3 acked"
    assert lines[1] == "<4>vigil.agent.ft: secondary slow"
    assert lines[2] == "<3>vigil.agent.ft: FT loop failed"
    assert all(line.startswith("<3>") for line in lines[3:]) and any("RuntimeError: boom" in x for x in lines[3:])


def test_elsewhere_lines_carry_a_timestamp_level_and_logger():
    lines = _log_lines({})
    assert lines[0].endswith("INFO vigil.agent.ft: checkpoint 3 acked") and lines[0][:4].isdigit()
