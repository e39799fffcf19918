"""Fixtures for the end-to-end tests: a real Envoy in network namespaces (egress_xds.lab).

- ``lab`` (session): one :class:`egress_xds.lab.Lab` with the standard world servers
  (``standard_servers()``: tls-10/http-10/tcp-10/grpc-10 on 203.0.113.10:443/80/9000/50051,
  the same ``-11`` on 203.0.113.11). Tests may add servers on other 203.0.113.0/24
  addresses (``lab.serve([...])``; stop them with ``lab.world.stop(proc)``).
- ``pod`` (function): a fresh pod namespace in that lab, removed (Envoy stopped, namespace
  deleted) after the test; on failure its Envoy log is printed into the test report.
- ``lab_required`` (session) / ``require_lab()``: skip with the reason when the lab cannot run here (not root, no
  iptables...), except under ``CI=true`` where it fails instead: CI must run these.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from egress_xds.lab import Lab, Pod, remove_stale_namespaces, standard_servers
from egress_xds.lab import unavailable_reason as lab_unavailable_reason

_reason: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why the lab cannot run (cached for the session), or None."""
    if not _reason:
        _reason.append(lab_unavailable_reason())
    return _reason[0]


def require_lab() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: the network-namespace lab must run, but: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the lab (directly or through ``pod``) is ``netns`` + ``envoy``."""
    for item in items:
        if "lab_required" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.netns)
            item.add_marker(pytest.mark.envoy)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_failed_key] = report.failed
    return report


_failed_key = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def lab_required() -> None:
    require_lab()


@pytest.fixture(scope="session")
def lab(lab_required: None) -> Iterator[Lab]:
    remove_stale_namespaces()
    with Lab() as the_lab:
        the_lab.serve(standard_servers())
        yield the_lab


@pytest.fixture
def pod(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Pod]:
    the_pod = lab.add_pod(request.node.name[:40])
    try:
        yield the_pod
    finally:
        if request.node.stash.get(_failed_key, False):
            print(f"--- {the_pod} envoy log (tail) ---\n{the_pod.envoy_log()}")
        lab.remove_pod(the_pod)
