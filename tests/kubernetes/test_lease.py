"""The Lease elector against the fake API server: one leader, conflicts, release, expiry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from egress_xds.sources.lease import LeaseElector
from tests.kubernetes.conftest import eventually
from tests.kubernetes.fake_apiserver import FakeApiServer


def elector(kubeconfig: Path, identity: str, **kw: Any) -> LeaseElector:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return LeaseElector(client.CoordinationV1Api(api), "egress-xds", "egress-xds", identity,
                        lease_duration=kw.pop("lease_duration", 2.0), renew_deadline=kw.pop("renew_deadline", 1.5),
                        retry_period=kw.pop("retry_period", 0.2), **kw)


def test_a_stale_resource_version_is_a_conflict_not_a_takeover(fake: FakeApiServer, kubeconfig: Path) -> None:
    a, b = elector(kubeconfig, "a"), elector(kubeconfig, "b")
    assert a.try_acquire_or_renew()
    lease = fake.get("Lease", "egress-xds", "egress-xds")
    assert lease is not None and lease["spec"]["holderIdentity"] == "a"
    assert lease["spec"]["leaseTransitions"] == 0 and lease["spec"]["leaseDurationSeconds"] == 2
    assert not b.try_acquire_or_renew()  # held and renewed: b waits

    a._leader = True
    a._release()  # empty holder: the next reader may take it...
    read = b._read

    def read_then_a_renews() -> dict[str, Any] | None:
        found = read()
        assert a.try_acquire_or_renew()  # ...but a writes first
        return found

    b._read = read_then_a_renews  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew()  # its write carries a stale resourceVersion: 409
    assert any(r["code"] == 409 and r["method"] == "PUT" for r in fake.requests)
    assert fake.get("Lease", "egress-xds", "egress-xds")["spec"]["holderIdentity"] == "a"  # type: ignore[index]


def test_one_leader_release_hands_over_at_once(fake: FakeApiServer, kubeconfig: Path) -> None:
    a, b = elector(kubeconfig, "a"), elector(kubeconfig, "b")
    a.start()
    eventually(lambda: a.is_leader)
    b.start()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:  # b never leads while a renews
            assert a.is_leader and not b.is_leader
            time.sleep(0.05)
        stopped = time.monotonic()
        a.stop(release=True)
        eventually(lambda: b.is_leader, timeout=2)
        assert time.monotonic() - stopped < 1.0  # no need to wait for the lease to expire
        lease = fake.get("Lease", "egress-xds", "egress-xds")
        assert lease is not None and lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        a.stop(release=False)
        b.stop(release=False)


def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires(fake: FakeApiServer,
                                                                         kubeconfig: Path) -> None:
    a = elector(kubeconfig, "a")
    a.start()
    try:
        eventually(lambda: a.is_leader)
        fake.down = True  # the API server is gone: renewals fail
        lost = time.monotonic()
        eventually(lambda: not a.is_leader, timeout=3)
        assert time.monotonic() - lost < 2.0  # renew deadline 1.5 s < lease duration 2 s
    finally:
        a.stop(release=False)
