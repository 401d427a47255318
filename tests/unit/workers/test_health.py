"""OutageLog: a background loop that fails every tick logs one traceback per outage."""

from __future__ import annotations

import logging

import pytest

from mediamill.workers.health import OutageLog


def test_one_traceback_per_outage_then_one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(logging.getLogger("test.outage"), "sweep")
    caplog.set_level(logging.INFO, logger="test.outage")
    assert outage.succeeded() is None and not outage.failing  # nothing to report
    for _ in range(3):
        outage.failed(ConnectionError("connection refused"))
    assert outage.failing
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1 and "sweep failed" in with_traceback[0].getMessage()
    again = [r.getMessage() for r in caplog.records if not r.exc_info]
    assert again == ["sweep failed again: ConnectionError: connection refused"] * 2
    caplog.clear()
    lasted_s = outage.succeeded()
    assert lasted_s is not None and lasted_s >= 0 and not outage.failing
    assert [r.getMessage().split(" after ")[0] for r in caplog.records] == ["sweep works again"]
    outage.failed(ConnectionError("down again"))  # a new outage: a traceback again
    assert caplog.records[-1].exc_info
