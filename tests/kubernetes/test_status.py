"""Status write-back (spec §5) through the status subresource of the fake API server.

One world produces every reason; the statuses the API server ends up holding are compared
with the spec. Then: nothing is rewritten when only times would change, a change keeps the
``lastTransitionTime`` of conditions that did not flip, and other controllers' parent
entries are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from egress_xds.serve import ServeConfig, Server
from egress_xds.sources.status_writer import desired_status
from tests.kubernetes.conftest import egress_network, eventually_async, fast_config, route, service
from tests.kubernetes.fake_apiserver import FakeApiServer

CONTROLLER = "egress-xds.io/policy-controller"
OTHER = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
         "controllerName": "example.com/gateway-controller",
         "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                         "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 1}]}
GATEWAY_PARENT = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}

WORLD: list[dict[str, Any]] = [
    egress_network("internet", "linkerd-egress", "Deny"),
    egress_network("overlap", "team", "Allow", networks=[{"cidr": "10.1.0.0/16"}]),
    egress_network("broken", "team2", "Deny", networks=[{"cidr": "not-a-cidr"}]),
    service("svc", "linkerd-egress", "10.96.0.10", 80),
    route("HTTPRoute", "ok", "linkerd-egress", "internet", 80, backends=[{"name": "svc", "port": 80}],
          extra_parents=[GATEWAY_PARENT]),
    route("HTTPRoute", "missing-parent", "linkerd-egress", "nope", 80),
    route("HTTPRoute", "parent-not-accepted", "team", "overlap", 80),
    route("TCPRoute", "conflicted", "linkerd-egress", "internet", 80),
    route("HTTPRoute", "no-port", "linkerd-egress", "internet", None),
    route("HTTPRoute", "backend-missing", "linkerd-egress", "internet", 8080, backends=[{"name": "nosuch", "port": 80}]),
    route("HTTPRoute", "bad-kind", "linkerd-egress", "internet", 8081,
          backends=[{"group": "", "kind": "ConfigMap", "name": "cm"}]),
    route("HTTPRoute", "ingress-only", "linkerd-egress", "gw", None, parent_namespace=None),
]
WORLD[-1]["spec"]["parentRefs"] = [GATEWAY_PARENT]

# (kind, namespace, name) -> expected (type, status, reason) per condition
EXPECTED_EGRESS = {
    "linkerd-egress/internet": [("Accepted", "True", "Accepted")],
    "team/overlap": [("Accepted", "False", "EgressReasonNetworkOverlap")],
    "team2/broken": [("Accepted", "False", "Invalid")],
}
EXPECTED_ROUTES = {
    ("HTTPRoute", "ok"): [("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")],
    ("HTTPRoute", "missing-parent"): [("Accepted", "False", "NoMatchingParent"), ("ResolvedRefs", "True", "ResolvedRefs")],
    ("TCPRoute", "conflicted"): [("Accepted", "False", "RouteReasonConflicted"),
                                 ("ResolvedRefs", "True", "ResolvedRefs")],
    ("HTTPRoute", "no-port"): [("Accepted", "False", "UnsupportedValue"), ("ResolvedRefs", "True", "ResolvedRefs")],
    ("HTTPRoute", "backend-missing"): [("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "BackendNotFound")],
    ("HTTPRoute", "bad-kind"): [("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "InvalidKind")],
}


def conditions(conds: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in conds]


def ours(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [p for p in ((obj or {}).get("status") or {}).get("parents", []) if p["controllerName"] == CONTROLLER]


@pytest.fixture
async def server(fake: FakeApiServer, kubeconfig: Path) -> AsyncIterator[Server]:
    for obj in WORLD:
        fake.apply(obj)
    fake.set_status("HTTPRoute", "linkerd-egress", "ok", {"parents": [OTHER]})
    srv = Server(ServeConfig(ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0",
                             kubernetes=fast_config(kubeconfig)))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def all_written(fake: FakeApiServer) -> bool:
    for ref in EXPECTED_EGRESS:
        namespace, name = ref.split("/")
        if not ((fake.get("EgressNetwork", namespace, name) or {}).get("status") or {}).get("conditions"):
            return False
    return all(ours(fake.get(kind, "linkerd-egress", name)) for kind, name in EXPECTED_ROUTES)


async def test_status_matches_the_spec_for_every_reason(server: Server, fake: FakeApiServer) -> None:
    await eventually_async(lambda: all_written(fake))
    for ref, expected in EXPECTED_EGRESS.items():
        namespace, name = ref.split("/")
        status = fake.get("EgressNetwork", namespace, name)["status"]  # type: ignore[index]
        assert conditions(status["conditions"]) == expected, ref
        assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in status["conditions"])
    overlap = fake.get("EgressNetwork", "team", "overlap")["status"]["conditions"][0]  # type: ignore[index]
    assert overlap["message"].startswith("networks overlap with clusterNetworks")
    broken = fake.get("EgressNetwork", "team2", "broken")["status"]["conditions"][0]  # type: ignore[index]
    assert "spec.networks[0].cidr" in broken["message"]

    for (kind, name), expected in EXPECTED_ROUTES.items():
        (parent,) = ours(fake.get(kind, "linkerd-egress", name))
        assert conditions(parent["conditions"]) == expected, name
        assert parent["parentRef"]["kind"] == "EgressNetwork"
    (parent,) = ours(fake.get("HTTPRoute", "linkerd-egress", "missing-parent"))
    assert parent["parentRef"] == {"group": "policy.linkerd.io", "kind": "EgressNetwork",
                                   "namespace": "linkerd-egress", "name": "nope", "port": 80}
    await eventually_async(lambda: ours(fake.get("HTTPRoute", "team", "parent-not-accepted")))
    (parent,) = ours(fake.get("HTTPRoute", "team", "parent-not-accepted"))
    assert conditions(parent["conditions"])[0] == ("Accepted", "False", "NoMatchingParent")
    assert parent["conditions"][0]["message"] == "EgressNetwork parent has not been accepted"

    # another controller's entry is kept untouched, ours follows it
    parents = fake.get("HTTPRoute", "linkerd-egress", "ok")["status"]["parents"]  # type: ignore[index]
    assert parents[0] == OTHER and len(parents) == 2
    # a route with no EgressNetwork parent gets nothing from us
    assert not ours(fake.get("HTTPRoute", "linkerd-egress", "ingress-only"))


async def test_only_real_changes_are_written_and_transition_times_are_kept(server: Server,
                                                                           fake: FakeApiServer) -> None:
    await eventually_async(lambda: all_written(fake))
    before = fake.get("HTTPRoute", "linkerd-egress", "backend-missing")
    writes = len(fake.status_writes())
    await asyncio.sleep(1.5)  # three resync periods of the leader
    assert len(fake.status_writes()) == writes, "statuses rewritten although nothing changed"

    await asyncio.sleep(1.1)  # so that a new lastTransitionTime differs from the old one
    fixed = route("HTTPRoute", "backend-missing", "linkerd-egress", "internet", 8080,
                  backends=[{"name": "svc", "port": 80}])
    fake.apply(fixed)

    def resolved() -> list[dict[str, Any]] | None:
        (parent,) = ours(fake.get("HTTPRoute", "linkerd-egress", "backend-missing"))
        return parent["conditions"] if parent["conditions"][1]["status"] == "True" else None

    after = await eventually_async(resolved)
    assert after is not None
    (old,) = ours(before)
    assert after[0]["lastTransitionTime"] == old["conditions"][0]["lastTransitionTime"]  # Accepted did not flip
    assert after[1]["lastTransitionTime"] != old["conditions"][1]["lastTransitionTime"]  # ResolvedRefs did
    assert {c["observedGeneration"] for c in after} == {2}


def test_desired_status_ignores_transition_times_only() -> None:
    live = {"kind": "EgressNetwork", "metadata": {"name": "n", "namespace": "ns", "generation": 3},
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                                       "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 3},
                                      {"type": "Other", "status": "True", "reason": "X", "message": ""}]}}
    entry = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}]}
    assert desired_status(live, entry, None, CONTROLLER, 3, "2030-01-01T00:00:00Z") is None
    new = desired_status(live, entry, None, CONTROLLER, 4, "2030-01-01T00:00:00Z")
    assert new is not None
    assert new["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert new["conditions"][0]["observedGeneration"] == 4
    assert new["conditions"][1]["type"] == "Other"  # conditions of other types are kept
    flipped = {"conditions": [{"type": "Accepted", "status": "False", "reason": "EgressReasonNetworkOverlap",
                               "message": "m"}]}
    new = desired_status(live, flipped, None, CONTROLLER, 3, "2030-01-01T00:00:00Z")
    assert new is not None and new["conditions"][0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"
