"""Hypothesis profiles for the property tests, and the case counters they fill.

Profiles are applied per test (``profile()``), never loaded globally, so other test folders
keep their own hypothesis settings. Under ``CI=true`` the profile is derandomized: the same
commit generates the same cases on every run. ``EGRESS_PROPERTY_PROFILE=property-dev`` or
``property-ci`` overrides the choice.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

settings.register_profile(
    "property-ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "property-dev",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# test name -> counts ("worlds", "queries", ...), filled by the tests, printed at the end.
CASE_COUNTS: dict[str, Counter[str]] = {}


def profile() -> settings:
    name = os.environ.get("EGRESS_PROPERTY_PROFILE") or (
        "property-ci" if os.environ.get("CI", "").lower() == "true" else "property-dev"
    )
    return settings.get_profile(name)
