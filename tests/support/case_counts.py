"""The terminal summary of generated-case counts, shared by the property and fuzz suites.

In: pytest's terminal reporter, a section title, and {test name: {count name: n}} filled by
the tests. Out: one line per test at the end of the run. Called by those suites' conftests.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest


def write_case_counts(terminalreporter: pytest.TerminalReporter, title: str,
                      counts: Mapping[str, Mapping[str, int]]) -> None:
    if not counts:
        return
    terminalreporter.section(title)
    for test, by_name in sorted(counts.items()):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(by_name.items()))
        terminalreporter.write_line(f"{test}: {detail}")
