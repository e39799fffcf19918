"""Spec §5: EgressNetwork and route conditions, and the report shape shared by ``validate``,
the debug endpoint and the Kubernetes status writer."""

from __future__ import annotations

import pytest

from egress_xds.translate import TranslatorOptions
from tests.unit.manifests import (
    GLOBAL,
    conditions,
    egress,
    en_backend,
    grpc_route,
    http_route,
    load,
    parent,
    path_rule,
    report_entry,
    service,
    svc_backend,
    tcp_route,
    translator,
)

OVERLAP = "EgressReasonNetworkOverlap"

# (id, networks, expected (status, reason))
EGRESS_ACCEPTED = [
    ("omitted-networks", None, ("True", "Accepted")),
    ("public-v4", ["203.0.113.0/24"], ("True", "Accepted")),
    ("public-v6", ["2001:db8::/32"], ("True", "Accepted")),
    ("inside-cluster-network", ["10.1.0.0/16"], ("False", OVERLAP)),
    ("contains-cluster-network", ["0.0.0.0/0"], ("False", OVERLAP)),
    ("partly-overlapping", ["172.0.0.0/8"], ("False", OVERLAP)),
    ("ipv6-cluster-network", ["fd00:1::/32"], ("False", OVERLAP)),
    ("ipv6-containing-cluster-network", ["::/0"], ("False", OVERLAP)),
    ("overlap-fully-covered-by-except", [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "100.64.0.0/10",
                                                                          "172.16.0.0/12", "192.168.0.0/16"]}],
     ("True", "Accepted")),
    ("overlap-covered-by-larger-except", [{"cidr": "8.0.0.0/5", "except": ["8.0.0.0/6"]}], ("True", "Accepted")),
    ("overlap-covered-by-several-excepts", [{"cidr": "10.0.0.0/7", "except": ["10.0.0.0/9", "10.128.0.0/9"]}],
     ("True", "Accepted")),
    ("overlap-partly-covered-by-except", [{"cidr": "10.0.0.0/7", "except": ["10.0.0.0/9"]}], ("False", OVERLAP)),
    ("second-entry-overlaps", ["203.0.113.0/24", "192.168.1.0/24"], ("False", OVERLAP)),
]


@pytest.mark.parametrize(("networks", "expected"), [c[1:] for c in EGRESS_ACCEPTED], ids=[c[0] for c in EGRESS_ACCEPTED])
def test_egress_network_accepted_condition(networks: list | None, expected: tuple[str, str]) -> None:
    report = translator([egress("en", networks=networks)]).status_report()
    status, reason, message = conditions(report, "EgressNetwork", GLOBAL, "en")["Accepted"]
    assert (status, reason) == expected
    if status == "False":
        assert "networks overlap with clusterNetworks" in message


def test_overlap_follows_the_cluster_networks_option() -> None:
    options = TranslatorOptions(cluster_networks=TranslatorOptions.networks(["203.0.113.0/24"]))
    report = translator([egress("a", networks=["203.0.113.0/25"]), egress("b", networks=["10.0.0.0/8"])], options).status_report()
    assert conditions(report, "EgressNetwork", GLOBAL, "a")["Accepted"][1] == OVERLAP
    assert conditions(report, "EgressNetwork", GLOBAL, "b")["Accepted"][1] == "Accepted"


NOT_ACCEPTED_EN = egress("overlap", networks=["10.0.0.0/8"])
# (id, extra objects, route, route kind, route namespace, (Accepted), (ResolvedRefs))
ROUTE_REASONS = [
    ("accepted", [], http_route("r"), ("True", "Accepted", ""), ("True", "ResolvedRefs", "")),
    ("no-matching-parent-missing", [], http_route("r", en="ghost"),
     ("False", "NoMatchingParent", "EgressNetwork linkerd-egress/ghost not found"), ("True", "ResolvedRefs", "")),
    ("no-matching-parent-not-accepted", [NOT_ACCEPTED_EN], http_route("r", en="overlap"),
     ("False", "NoMatchingParent", "EgressNetwork parent has not been accepted"), ("True", "ResolvedRefs", "")),
    ("route-reason-conflicted", [grpc_route("g", port=80)], http_route("r"),
     ("False", "RouteReasonConflicted", "GRPCRoute"), ("True", "ResolvedRefs", "")),
    ("unsupported-value-filter", [], http_route("r", rules=[path_rule("/", filters=[{"type": "RequestMirror"}])]),
     ("False", "UnsupportedValue", "RequestMirror"), ("True", "ResolvedRefs", "")),
    ("unsupported-value-no-port", [], http_route("r", port=None),
     ("False", "UnsupportedValue", "port"), ("True", "ResolvedRefs", "")),
    ("backend-not-found", [], http_route("r", rules=[path_rule("/", backends=[svc_backend("ghost")])]),
     ("True", "Accepted", ""), ("False", "BackendNotFound", "ghost")),
    ("invalid-kind", [egress("other", networks=["198.51.100.0/24"])],
     http_route("r", rules=[path_rule("/", backends=[en_backend("other")])]),
     ("True", "Accepted", ""), ("False", "InvalidKind", "needs to be on a route that has an EgressNetwork parent")),
    ("resolved-service", [service("api", GLOBAL)], http_route("r", rules=[path_rule("/", backends=[svc_backend("api")])]),
     ("True", "Accepted", ""), ("True", "ResolvedRefs", "")),
]


@pytest.mark.parametrize(("extra", "route", "accepted", "resolved"), [c[1:] for c in ROUTE_REASONS],
                         ids=[c[0] for c in ROUTE_REASONS])
def test_route_condition_reasons(extra: list, route: dict, accepted: tuple, resolved: tuple) -> None:
    report = translator([egress("internet"), *extra, route]).status_report()
    conds = conditions(report, route["kind"], GLOBAL, route["metadata"]["name"])
    for actual, expected in ((conds["Accepted"], accepted), (conds["ResolvedRefs"], resolved)):
        assert actual[:2] == expected[:2]
        assert expected[2] in actual[2]


def test_one_parent_entry_per_egress_network_parent_ref() -> None:
    route = http_route("r", parents=[parent("internet", 80), parent("ghost", 80), {"name": "gw", "port": 80},
                                     parent("internet", 80)])
    report = translator([egress("internet"), route]).status_report()
    parents = report_entry(report, "HTTPRoute", GLOBAL, "r")["parents"]
    refs = [(p["parentRef"]["name"], p["parentRef"]["port"]) for p in parents]
    assert refs == [("internet", 80), ("ghost", 80)]
    assert [p["conditions"][0]["reason"] for p in parents] == ["Accepted", "NoMatchingParent"]


def test_controller_name_is_configurable() -> None:
    options = TranslatorOptions(controller_name="example.com/egress")
    report = translator([egress("internet"), http_route("r")], options).status_report()
    assert report_entry(report, "HTTPRoute", GLOBAL, "r")["parents"][0]["controllerName"] == "example.com/egress"


def test_report_shape() -> None:
    docs = [egress("internet"), http_route("r"), tcp_route("t", "team", en_ns=GLOBAL, port=9000),
            service("api", GLOBAL)]
    result = load(docs + [egress("Bad")], "world.yaml")
    t = translator(docs)
    report = t.status_report(result.errors)
    assert set(report) == {"objects", "errors"}
    keys = [(o["kind"], o["namespace"], o["name"]) for o in report["objects"]]
    assert keys == sorted(keys)
    assert keys == [("EgressNetwork", GLOBAL, "internet"), ("HTTPRoute", GLOBAL, "r"), ("TCPRoute", "team", "t")]
    for obj in report["objects"]:
        assert {"kind", "namespace", "name", "conditions", "parents"} <= set(obj)
        for cond in obj["conditions"]:
            assert set(cond) >= {"type", "status", "reason", "message"}
    en = report["objects"][0]
    assert [c["type"] for c in en["conditions"]] == ["Accepted"] and en["parents"] == []
    route = report["objects"][1]
    assert route["conditions"] == []
    (p,) = route["parents"]
    assert {"parentRef", "conditions"} <= set(p)
    assert p["parentRef"] == {"group": "policy.linkerd.io", "kind": "EgressNetwork", "namespace": GLOBAL,
                              "name": "internet", "port": 80}
    assert [c["type"] for c in p["conditions"]] == ["Accepted", "ResolvedRefs"]
    (error,) = report["errors"]
    assert error == {"file": "world.yaml", "kind": "EgressNetwork", "namespace": GLOBAL, "name": "Bad",
                     "field": "metadata.name", "message": error["message"]}
    assert "not a valid name" in error["message"]


def test_consumer_route_parent_ref_reports_the_parent_namespace() -> None:
    report = translator([egress("internet"), http_route("c", "team", en_ns=GLOBAL)]).status_report()
    ref = report_entry(report, "HTTPRoute", "team", "c")["parents"][0]["parentRef"]
    assert (ref["namespace"], ref["name"]) == (GLOBAL, "internet")
