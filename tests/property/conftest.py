"""Prints how many generated cases each property test ran (filled in ``profiles.CASE_COUNTS``)."""

from __future__ import annotations

import pytest

from .profiles import CASE_COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASE_COUNTS:
        return
    terminalreporter.section("egress property cases")
    for test, counts in sorted(CASE_COUNTS.items()):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"{test}: {detail}")
