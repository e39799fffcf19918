"""Prints how many generated cases each property test ran (filled in ``profiles.CASE_COUNTS``)."""

from __future__ import annotations

import pytest

from tests.support.case_counts import write_case_counts

from .profiles import CASE_COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_case_counts(terminalreporter, "egress property cases", CASE_COUNTS)
