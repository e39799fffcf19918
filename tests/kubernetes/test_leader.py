"""Two ``egress-xds serve --kubernetes`` processes against one fake API server.

Both serve xDS; only the holder of the Lease writes status; SIGKILL of the holder moves the
writes to the other replica within the lease duration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubernetes.conftest import egress_network, eventually
from tests.kubernetes.fake_apiserver import FakeApiServer

LEASE_DURATION = 2.0
ROOT = Path(__file__).resolve().parents[2]


def start_replica(kubeconfig: Path, tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    env = dict(os.environ, POD_NAME=name)
    proc = subprocess.Popen(
        [sys.executable, "-m", "egress_xds.cli", "serve", "--kubernetes", "--kubeconfig", str(kubeconfig),
         "--ads-listen", "127.0.0.1:0", "--debug-listen", "127.0.0.1:0", "--lease-namespace", "egress-xds",
         "--lease-duration", str(LEASE_DURATION), "--lease-renew-deadline", "1.5",
         "--lease-retry-period", "0.25", "--status-resync", "0.5"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    return proc, log


@pytest.fixture
def replicas(fake: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    fake.apply(egress_network("internet", "linkerd-egress", "Deny"))
    procs = [start_replica(kubeconfig, tmp_path, name)[0] for name in ("replica-a", "replica-b")]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def holder(fake: FakeApiServer) -> str | None:
    lease = fake.get("Lease", "egress-xds", "egress-xds")
    return (lease or {}).get("spec", {}).get("holderIdentity")


def writer_of(request: dict[str, object]) -> str:
    return str(request["user_agent"]).removeprefix("egress-xds/")


def flip(fake: FakeApiServer, i: int) -> None:
    """A change whose status differs each time: the network overlaps the cluster or not."""
    cidr = "10.1.0.0/16" if i % 2 else "203.0.113.0/24"
    fake.apply(egress_network("flapping", "linkerd-egress", "Allow", networks=[{"cidr": cidr}]))


def test_only_the_leader_writes_and_leadership_moves_when_it_dies(fake: FakeApiServer,
                                                                    replicas: list[subprocess.Popen[bytes]]) -> None:
    first = eventually(lambda: holder(fake), timeout=20)
    assert first is not None
    # both replicas list and watch (they both serve xDS)
    eventually(lambda: len({r["user_agent"] for r in fake.requests if r["method"] == "WATCH"}) == 2, timeout=20)
    for i in range(6):
        flip(fake, i)
        time.sleep(0.3)
    eventually(lambda: len(fake.status_writes()) >= 4)
    writes = fake.status_writes()
    assert {writer_of(w) for w in writes} == {first}
    assert all(writer_of(w) == fake.holder_at(w["time"]) for w in writes)  # type: ignore[arg-type]

    # kill the leader hard: no release, the Lease has to expire
    by_name = {"replica-a": replicas[0], "replica-b": replicas[1]}
    leader = by_name[first.rsplit("_", 1)[0]]
    killed_at = time.monotonic()
    leader.send_signal(signal.SIGKILL)
    leader.wait(5)

    second = eventually(lambda: (h := holder(fake)) != first and h, timeout=LEASE_DURATION * 3)
    took_over = next(t for t, who in fake.lease_log if who == second and t > killed_at)
    print(f"leader killed -> other replica holds the Lease after {took_over - killed_at:.2f} s")
    assert took_over - killed_at <= LEASE_DURATION + 1.0, took_over - killed_at

    before = len(fake.status_writes())
    for i in range(6, 10):
        flip(fake, i)
        time.sleep(0.3)
    eventually(lambda: len(fake.status_writes()) > before)
    later = fake.status_writes()[before:]
    assert {writer_of(w) for w in later} == {second}
    flapping = fake.get("EgressNetwork", "linkerd-egress", "flapping")
    assert flapping is not None
    assert flapping["status"]["conditions"][0]["reason"] == "EgressReasonNetworkOverlap"  # i = 9: overlaps
