"""Prints how many generated cases each fuzz test ran (filled in ``counts.FUZZ_CASES``)."""

from __future__ import annotations

import pytest

from .counts import FUZZ_CASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZ_CASES:
        return
    terminalreporter.section("egress fuzz cases")
    for test, counts in sorted(FUZZ_CASES.items()):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"{test}: {detail}")
