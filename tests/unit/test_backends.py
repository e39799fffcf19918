"""Spec §3 backendRefs table: every row, for HTTP, TLS and TCP routes, as status + verdict +
what Envoy receives (clusters, 500 direct responses, weighted splits).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.manifests import (
    GLOBAL,
    conditions,
    egress,
    en_backend,
    explain,
    http_route,
    path_rule,
    rendered,
    service,
    svc_backend,
    tcp_route,
    tls_route,
    translator,
)

IP = "203.0.113.5"
WORLD = [
    egress("internet"),
    egress("other", networks=["198.51.100.0/24"]),
    service("api", GLOBAL, "10.96.0.10", [80, 8080]),
    service("api", "team", "10.96.0.20", [9090]),
    service("headless", GLOBAL, "None", [80]),
]
ANOTHER_EN = "EgressNetwork backend needs to be on a route that has an EgressNetwork parent"

# (id, backendRefs, ResolvedRefs (status, reason, message fragment), action, destination on port P)
ROWS = [
    ("none", [], ("True", "ResolvedRefs", ""), "forward", "ORIGINAL"),
    ("parent-egress-network", [en_backend("internet")], ("True", "ResolvedRefs", ""), "forward", "ORIGINAL"),
    ("parent-egress-network-port-only-labels", [en_backend("internet", port=9999)], ("True", "ResolvedRefs", ""),
     "forward", "ORIGINAL"),
    ("parent-egress-network-explicit-namespace", [en_backend("internet", namespace=GLOBAL)],
     ("True", "ResolvedRefs", ""), "forward", "ORIGINAL"),
    ("another-egress-network", [en_backend("other")], ("False", "InvalidKind", ANOTHER_EN), "invalid", None),
    ("missing-egress-network", [en_backend("ghost")], ("False", "BackendNotFound", "ghost"), "invalid", None),
    ("service-with-port", [svc_backend("api", 8080)], ("True", "ResolvedRefs", ""), "redirect", "10.96.0.10:8080"),
    ("service-other-namespace", [svc_backend("api", 9090, namespace="team")], ("True", "ResolvedRefs", ""),
     "redirect", "10.96.0.20:9090"),
    ("service-without-port", [svc_backend("api", None)], ("False", "UnsupportedValue", "needs a port"), "invalid", None),
    ("missing-service", [svc_backend("ghost", 80)], ("False", "BackendNotFound", "ghost"), "invalid", None),
    ("service-port-not-exposed", [svc_backend("api", 81)], ("False", "BackendNotFound", "no port 81"), "invalid", None),
    ("service-in-wrong-namespace", [svc_backend("api", 80, namespace="nowhere")], ("False", "BackendNotFound", "nowhere/api"),
     "invalid", None),
    ("headless-service", [svc_backend("headless", 80)], ("False", "BackendNotFound", "has no clusterIP"), "invalid", None),
    ("other-kind", [{"group": "apps", "kind": "Deployment", "name": "web"}], ("False", "InvalidKind", "apps/Deployment"),
     "invalid", None),
    ("other-group-service", [{"group": "example.com", "kind": "Service", "name": "api", "port": 80}],
     ("False", "InvalidKind", "example.com/Service"), "invalid", None),
]


def _routes(backends: list) -> dict[str, tuple[dict, int, dict[str, Any]]]:
    return {
        "HTTPRoute": (http_route("r", rules=[path_rule("/", backends=backends)]), 80, {"host": "h", "path": "/"}),
        "TLSRoute": (tls_route("r", hostnames=["api.example.com"], backends=backends), 443, {"sni": "api.example.com"}),
        "TCPRoute": (tcp_route("r", port=9000, backends=backends), 9000, {}),
    }


@pytest.mark.parametrize("kind", ["HTTPRoute", "TLSRoute", "TCPRoute"])
@pytest.mark.parametrize(("backends", "resolved", "action", "destination"), [c[1:] for c in ROWS], ids=[c[0] for c in ROWS])
def test_backend_ref_table(kind: str, backends: list, resolved: tuple, action: str, destination: str | None) -> None:
    route, port, request = _routes(backends)[kind]
    t = translator([*WORLD, route])
    conds = conditions(t.status_report(), kind, GLOBAL, "r")
    assert conds["Accepted"][:2] == ("True", "Accepted"), "a bad backend does not un-accept the route"
    assert conds["ResolvedRefs"][:2] == resolved[:2]
    assert resolved[2] in conds["ResolvedRefs"][2]
    verdict = t.explain("app", IP, port, **request)
    assert verdict["route"] == f"{kind} {GLOBAL}/r"
    assert verdict["action"] == action
    expected = f"{IP}:{port}" if destination == "ORIGINAL" else destination
    assert verdict["destination"] == expected


def test_omitted_backend_namespace_is_the_routes_namespace() -> None:
    # Decision: the Gateway API rule (not the parent's namespace).
    docs = [*WORLD, http_route("r", "team", en_ns=GLOBAL, rules=[path_rule("/", backends=[svc_backend("api", 9090)])])]
    t = translator(docs)
    assert conditions(t.status_report(), "HTTPRoute", "team", "r")["ResolvedRefs"][0] == "True"
    assert t.explain("team", IP, 80, host="h", path="/")["destination"] == "10.96.0.20:9090"


def test_service_backend_becomes_a_static_cluster_and_keeps_the_host() -> None:
    dumped = rendered([*WORLD, http_route("r", rules=[path_rule("/", backends=[svc_backend("api", 8080)])])])
    clusters = {c["name"]: c for c in dumped["clusters"]}
    cluster = clusters["service|linkerd-egress|api|8080"]
    assert cluster["type"] == "STATIC"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (endpoint["address"], endpoint["port_value"]) == ("10.96.0.10", 8080)
    route = next(r for rc in dumped["routes"] for vh in rc["virtual_hosts"] for r in vh["routes"]
                 if r["name"].startswith("HTTPRoute "))
    assert route["route"]["cluster"] == "service|linkerd-egress|api|8080"
    assert not any(k.startswith("host_rewrite") for k in route["route"])


def test_unused_services_get_no_cluster() -> None:
    names = {c["name"] for c in rendered(WORLD)["clusters"]}
    assert names == {"egress-deny", "egress-invalid-backend", "egress-passthrough"}


@pytest.mark.parametrize(("backends", "reason"), [
    pytest.param([svc_backend("ghost", 80)], "BackendNotFound", id="missing-service"),
    pytest.param([en_backend("other")], "InvalidKind", id="another-egress-network"),
    pytest.param([svc_backend("api", None)], "UnsupportedValue", id="service-without-port"),
])
def test_invalid_http_backend_is_a_500_direct_response(backends: list, reason: str) -> None:
    dumped = rendered([*WORLD, http_route("r", rules=[path_rule("/", backends=backends)])])
    route = next(r for rc in dumped["routes"] for vh in rc["virtual_hosts"] for r in vh["routes"]
                 if r["name"].startswith("HTTPRoute "))
    assert route["direct_response"]["status"] == 500
    assert reason in route["direct_response"]["body"]["inline_string"]


def test_invalid_tcp_backend_closes_without_dialling() -> None:
    dumped = rendered([*WORLD, tcp_route("r", port=9000, backends=[svc_backend("ghost", 80)])])
    chain = next(c for c in dumped["listeners"][0]["filter_chains"] if c["name"] == "9000|linkerd-egress/internet|tcp")
    config = chain["filters"][0]["typed_config"]
    assert config["cluster"] == "egress-deny"
    deny = next(c for c in dumped["clusters"] if c["name"] == "egress-deny")
    assert "endpoints" not in deny.get("load_assignment", {})


# (id, backendRefs, expected weighted clusters)
WEIGHTS = [
    ("default-weight-is-1", [en_backend("internet"), svc_backend("api", 80)],
     {"egress-passthrough": 1, "service|linkerd-egress|api|80": 1}),
    ("explicit-weights", [en_backend("internet", weight=3), svc_backend("api", 80, weight=1)],
     {"egress-passthrough": 3, "service|linkerd-egress|api|80": 1}),
    ("invalid-share-goes-to-a-sink", [svc_backend("api", 80, weight=1), svc_backend("ghost", 80, weight=1)],
     {"service|linkerd-egress|api|80": 1, "egress-invalid-backend": 1}),
]


@pytest.mark.parametrize(("backends", "expected"), [c[1:] for c in WEIGHTS], ids=[c[0] for c in WEIGHTS])
def test_weighted_http_backends(backends: list, expected: dict) -> None:
    dumped = rendered([*WORLD, http_route("r", rules=[path_rule("/", backends=backends)])])
    route = next(r for rc in dumped["routes"] for vh in rc["virtual_hosts"] for r in vh["routes"]
                 if r["name"].startswith("HTTPRoute "))
    split = {c["name"]: c["weight"] for c in route["route"]["weighted_clusters"]["clusters"]}
    assert split == expected
    cluster_names = {c["name"] for c in dumped["clusters"]}
    assert set(split) <= cluster_names, "a route must never name a cluster Envoy does not have"


def test_weighted_tcp_backends() -> None:
    backends = [en_backend("internet", weight=9), svc_backend("api", 80, weight=1)]
    dumped = rendered([*WORLD, tcp_route("r", port=9000, backends=backends)])
    chain = next(c for c in dumped["listeners"][0]["filter_chains"] if c["name"] == "9000|linkerd-egress/internet|tcp")
    split = {c["name"]: c["weight"] for c in chain["filters"][0]["typed_config"]["weighted_clusters"]["clusters"]}
    assert split == {"egress-passthrough": 9, "service|linkerd-egress|api|80": 1}


def test_weights_show_in_explain() -> None:
    docs = [*WORLD, http_route("r", rules=[path_rule("/", backends=[en_backend("internet", weight=3),
                                                                     svc_backend("api", 80, weight=1)])])]
    reason = explain(docs, "app", IP, 80, host="h", path="/")["reason"]
    assert "75%" in reason and "25%" in reason


def test_all_weights_zero_is_invalid() -> None:
    docs = [*WORLD, http_route("r", rules=[path_rule("/", backends=[svc_backend("api", 80, weight=0)])])]
    assert explain(docs, "app", IP, 80, host="h", path="/")["action"] == "invalid"
    dumped = rendered(docs)
    route = next(r for rc in dumped["routes"] for vh in rc["virtual_hosts"] for r in vh["routes"]
                 if r["name"].startswith("HTTPRoute "))
    assert route["direct_response"]["status"] == 500
