"""Prints how many generated cases each fuzz test ran (filled in ``counts.FUZZ_CASES``)."""

from __future__ import annotations

import pytest

from tests.support.case_counts import write_case_counts

from .counts import FUZZ_CASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_case_counts(terminalreporter, "egress fuzz cases", FUZZ_CASES)
