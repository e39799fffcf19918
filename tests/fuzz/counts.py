"""Generated-case counters of the fuzz tests, printed in the terminal summary by conftest.py.

Each test adds to ``FUZZ_CASES[test name]`` and also records the totals with
``record_property`` (they land in a JUnit XML report). The hypothesis profile is the property
suite's (``tests/property/profiles.py``): derandomized under ``CI=true``, no deadline.
"""

from __future__ import annotations

from collections import Counter

FUZZ_CASES: dict[str, Counter[str]] = {}


def counter(test: str) -> Counter[str]:
    return FUZZ_CASES.setdefault(test, Counter())
