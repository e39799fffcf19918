"""Spec §3 (attachment): producer vs consumer routes, parentRef rules, route-kind conflicts,
opaque ports. Observed through ``explain`` verdicts and ``status_report`` conditions.
"""

from __future__ import annotations

import pytest

from egress_xds.translate import TranslatorOptions
from tests.unit.manifests import (
    GLOBAL,
    conditions,
    egress,
    explain,
    grpc_route,
    http_route,
    parent,
    path_rule,
    rendered,
    tcp_route,
    tls_route,
    translator,
)

IP = "203.0.113.5"
PRODUCER_CONSUMER = [
    egress("internet"),
    http_route("producer", rules=[path_rule("/producer")]),
    http_route("consumer", "team-a", en_ns=GLOBAL, rules=[path_rule("/consumer")]),
]

# (id, client namespace, path, expected route)
VISIBILITY = [
    ("producer-route-applies-to-team-a", "team-a", "/producer", f"HTTPRoute {GLOBAL}/producer"),
    ("producer-route-applies-to-team-b", "team-b", "/producer", f"HTTPRoute {GLOBAL}/producer"),
    ("producer-route-applies-to-global-ns", GLOBAL, "/producer", f"HTTPRoute {GLOBAL}/producer"),
    ("consumer-route-applies-to-its-namespace", "team-a", "/consumer", "HTTPRoute team-a/consumer"),
    ("consumer-route-invisible-to-other-namespace", "team-b", "/consumer", "default"),
    ("consumer-route-invisible-to-producer-namespace", GLOBAL, "/consumer", "default"),
]


@pytest.mark.parametrize(("namespace", "path", "route"), [c[1:] for c in VISIBILITY], ids=[c[0] for c in VISIBILITY])
def test_producer_and_consumer_routes(namespace: str, path: str, route: str) -> None:
    verdict = explain(PRODUCER_CONSUMER, namespace, IP, 80, host="api.example.com", path=path)
    assert verdict["route"] == route
    assert verdict["action"] == ("deny" if route == "default" else "forward")


def test_consumer_route_is_absent_from_other_namespaces_resources() -> None:
    def route_names(namespace: str) -> set[str]:
        dumped = rendered(PRODUCER_CONSUMER, namespace)
        return {r["name"] for rc in dumped.get("routes", []) for vh in rc["virtual_hosts"] for r in vh["routes"]}

    assert any("team-a/consumer" in n for n in route_names("team-a"))
    assert not any("consumer" in n for n in route_names("team-b"))
    assert not any("consumer" in n for n in route_names(GLOBAL))


def test_consumer_route_on_a_local_egress_network_of_its_own_namespace_is_a_producer_route() -> None:
    docs = [egress("own", "team", networks=["203.0.113.0/24"]), http_route("r", "team", en="own")]
    assert explain(docs, "team", IP, 80, host="h", path="/")["route"] == "HTTPRoute team/r"


def test_consumer_route_does_nothing_when_its_namespace_has_local_egress_networks() -> None:
    docs = [egress("internet"), egress("own", "team-a", networks=["198.51.100.0/24"]),
            http_route("consumer", "team-a", en_ns=GLOBAL)]
    verdict = explain(docs, "team-a", IP, 80, host="h", path="/")
    assert verdict["egress_network"] is None  # the local network hides the global one
    assert conditions(translator(docs).status_report(), "HTTPRoute", "team-a", "consumer")["Accepted"][0] == "True"


# (id, parentRefs, expected (status, reason, message fragment))
PARENT_REFS = [
    ("port-required", [parent("internet", None)], ("False", "UnsupportedValue", "must set port")),
    ("namespace-defaults-to-route-namespace", [parent("internet", 80)], ("True", "Accepted", "")),
    ("cross-namespace-parent-needs-no-grant", [parent("internet", 80, GLOBAL)], ("True", "Accepted", "")),
    ("missing-parent", [parent("ghost", 80)], ("False", "NoMatchingParent", "EgressNetwork linkerd-egress/ghost not found")),
    ("wrong-namespace", [parent("internet", 80, "team")], ("False", "NoMatchingParent", "team/internet not found")),
    ("sectionName-is-ignored", [parent("internet", 80) | {"sectionName": "http"}], ("True", "Accepted", "")),
]


@pytest.mark.parametrize(("parents", "expected"), [c[1:] for c in PARENT_REFS], ids=[c[0] for c in PARENT_REFS])
def test_parent_ref_rules(parents: list, expected: tuple[str, str, str]) -> None:
    docs = [egress("internet"), http_route("r", parents=parents)]
    accepted = conditions(translator(docs).status_report(), "HTTPRoute", GLOBAL, "r")["Accepted"]
    assert accepted[:2] == expected[:2]
    assert expected[2] in accepted[2]


def test_route_without_port_is_not_programmed() -> None:
    docs = [egress("internet"), http_route("r", port=None)]
    assert explain(docs, "app", IP, 80, host="h", path="/")["route"] == "default"


def test_parent_ref_to_other_kinds_is_not_ours() -> None:
    docs = [egress("internet"), http_route("r", parents=[{"name": "gw", "port": 80}])]
    report = translator(docs).status_report()
    assert [o["name"] for o in report["objects"]] == ["internet"]  # no status entry for a Gateway parent
    assert explain(docs, "app", IP, 80, host="h", path="/")["route"] == "default"


def test_route_port_matches_the_destination_port_exactly() -> None:
    docs = [egress("internet"), http_route("r", port=8080)]
    assert explain(docs, "app", IP, 8080, host="h", path="/")["route"] == f"HTTPRoute {GLOBAL}/r"
    assert explain(docs, "app", IP, 80, host="h", path="/")["route"] == "default"
    assert explain(docs, "app", IP, 8081, host="h", path="/")["route"] == "default"


def test_route_with_two_parents_attaches_to_both() -> None:
    docs = [egress("internet"), egress("partners", networks=["203.0.113.0/25"]),
            http_route("r", parents=[parent("internet", 80), parent("partners", 8080)])]
    report = translator(docs).status_report()
    assert conditions(report, "HTTPRoute", GLOBAL, "r", 0)["Accepted"][0] == "True"
    assert conditions(report, "HTTPRoute", GLOBAL, "r", 1)["Accepted"][0] == "True"
    assert explain(docs, "app", "198.51.100.1", 80, host="h", path="/")["route"] == f"HTTPRoute {GLOBAL}/r"
    assert explain(docs, "app", "203.0.113.1", 8080, host="h", path="/")["route"] == f"HTTPRoute {GLOBAL}/r"
    assert explain(docs, "app", "203.0.113.1", 80, host="h", path="/")["route"] == "default"


# Route kinds on one (EgressNetwork, port): GRPC > HTTP > TLS > TCP.
KIND_BUILDERS = {
    "GRPCRoute": lambda name, port: grpc_route(name, port=port),
    "HTTPRoute": lambda name, port: http_route(name, port=port),
    "TLSRoute": lambda name, port: tls_route(name, port=port),
    "TCPRoute": lambda name, port: tcp_route(name, port=port),
}
# (id, kinds present on port 8443, winner)
CONFLICTS = [
    ("grpc-beats-http", ["GRPCRoute", "HTTPRoute"], "GRPCRoute"),
    ("grpc-beats-tls", ["GRPCRoute", "TLSRoute"], "GRPCRoute"),
    ("grpc-beats-tcp", ["GRPCRoute", "TCPRoute"], "GRPCRoute"),
    ("http-beats-tls", ["HTTPRoute", "TLSRoute"], "HTTPRoute"),
    ("http-beats-tcp", ["TCPRoute", "HTTPRoute"], "HTTPRoute"),
    ("tls-beats-tcp", ["TCPRoute", "TLSRoute"], "TLSRoute"),
    ("all-four", ["TCPRoute", "TLSRoute", "HTTPRoute", "GRPCRoute"], "GRPCRoute"),
]


@pytest.mark.parametrize(("kinds", "winner"), [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_route_kind_conflicts(kinds: list[str], winner: str) -> None:
    docs = [egress("internet"), *(KIND_BUILDERS[k](f"r-{k.lower()}", 8443) for k in kinds)]
    report = translator(docs).status_report()
    for kind in kinds:
        accepted = conditions(report, kind, GLOBAL, f"r-{kind.lower()}")["Accepted"]
        if kind == winner:
            assert accepted[:2] == ("True", "Accepted")
        else:
            assert accepted[:2] == ("False", "RouteReasonConflicted")
            assert winner in accepted[2]


def test_kinds_on_different_ports_or_parents_do_not_conflict() -> None:
    docs = [egress("internet"), egress("partners", networks=["203.0.113.0/25"]),
            http_route("h", port=80), tcp_route("t", port=9000), tls_route("s", en="partners", port=80)]
    report = translator(docs).status_report()
    for kind, name in [("HTTPRoute", "h"), ("TCPRoute", "t"), ("TLSRoute", "s")]:
        assert conditions(report, kind, GLOBAL, name)["Accepted"][:2] == ("True", "Accepted")


def test_conflicted_route_is_not_programmed() -> None:
    docs = [egress("internet"), http_route("h", port=443), tls_route("t", port=443, hostnames=["api.example.com"])]
    verdict = explain(docs, "app", IP, 443, sni="api.example.com")
    assert verdict["route"] != f"TLSRoute {GLOBAL}/t"
    assert verdict["action"] == "deny"


def test_routes_on_a_non_accepted_parent_are_not_programmed() -> None:
    docs = [egress("overlap", policy="Deny", networks=["10.0.0.0/8", "203.0.113.0/24"]), http_route("r", en="overlap")]
    accepted = conditions(translator(docs).status_report(), "HTTPRoute", GLOBAL, "r")["Accepted"]
    assert accepted == ("False", "NoMatchingParent", "EgressNetwork parent has not been accepted")
    verdict = explain(docs, "app", IP, 80, host="h", path="/")
    assert (verdict["egress_network"], verdict["route"], verdict["action"]) == (f"{GLOBAL}/overlap", "default", "deny")


# ---------------------------------------------------------------------------------------
# Opaque ports: default list, and the annotation on the EgressNetwork (replaces the list).

DEFAULT_OPAQUE = [25, 587, 3306, 4444, 5432, 6379, 9300, 11211]


@pytest.mark.parametrize("port", DEFAULT_OPAQUE)
def test_default_opaque_ports_skip_http_detection(port: int) -> None:
    docs = [egress("internet"), http_route("r", port=port)]
    accepted = conditions(translator(docs).status_report(), "HTTPRoute", GLOBAL, "r")["Accepted"]
    assert accepted[:2] == ("False", "UnsupportedValue")
    assert "opaque" in accepted[2]
    verdict = explain(docs, "app", IP, port, host="h", path="/")
    assert (verdict["route"], verdict["action"]) == ("default", "deny")
    assert "opaque" in verdict["reason"]


@pytest.mark.parametrize("port", [5432, 3306])
def test_tcp_route_applies_on_an_opaque_port(port: int) -> None:
    docs = [egress("internet"), tcp_route("db", port=port)]
    assert conditions(translator(docs).status_report(), "TCPRoute", GLOBAL, "db")["Accepted"][0] == "True"
    assert explain(docs, "app", IP, port)["route"] == f"TCPRoute {GLOBAL}/db"
    assert explain(docs, "app", IP, port, host="h", path="/")["route"] == f"TCPRoute {GLOBAL}/db"


# (id, annotation, port, opaque?)
ANNOTATION = [
    ("annotated-port-is-opaque", "8080", 8080, True),
    ("annotated-range-is-opaque", "8000-8100", 8050, True),
    ("annotation-replaces-default-list", "8080", 5432, False),
    ("list-of-ports", "9000,9100", 9100, True),
    ("port-not-listed", "9000,9100", 9050, False),
]


@pytest.mark.parametrize(("annotation", "port", "opaque"), [c[1:] for c in ANNOTATION], ids=[c[0] for c in ANNOTATION])
def test_opaque_ports_annotation(annotation: str, port: int, opaque: bool) -> None:
    docs = [egress("internet", annotations={"config.linkerd.io/opaque-ports": annotation}), http_route("r", port=port)]
    accepted = conditions(translator(docs).status_report(), "HTTPRoute", GLOBAL, "r")["Accepted"]
    verdict = explain(docs, "app", IP, port, host="h", path="/")
    if opaque:
        assert accepted[1] == "UnsupportedValue"
        assert verdict["route"] == "default"
    else:
        assert accepted[:2] == ("True", "Accepted")
        assert verdict["route"] == f"HTTPRoute {GLOBAL}/r"


def test_annotation_applies_only_to_its_egress_network() -> None:
    docs = [egress("opaque", annotations={"config.linkerd.io/opaque-ports": "8080"}, networks=["203.0.113.0/25"]),
            egress("plain", networks=["198.51.100.0/24"]),
            http_route("r", en="plain", port=8080)]
    assert explain(docs, "app", "198.51.100.1", 8080, host="h", path="/")["route"] == f"HTTPRoute {GLOBAL}/r"
    assert "opaque" in explain(docs, "app", "203.0.113.1", 8080, host="h", path="/")["reason"]


def test_opaque_ports_option() -> None:
    options = TranslatorOptions(opaque_ports=frozenset({7000}))
    docs = [egress("internet"), http_route("r", port=5432), http_route("s", port=7000)]
    t = translator(docs, options)
    report = t.status_report()
    assert conditions(report, "HTTPRoute", GLOBAL, "r")["Accepted"][0] == "True"
    assert conditions(report, "HTTPRoute", GLOBAL, "s")["Accepted"][1] == "UnsupportedValue"


# ---------------------------------------------------------------------------------------
# Protocol per port: what unrouted traffic of another protocol gets.

# (id, routes on port 8443, request kind, expected route label, action)
PROTOCOL = [
    ("http-port-tls-bytes-get-default", [http_route("h", port=8443)], {"sni": "api.example.com"}, "default", "deny"),
    ("tls-port-http-bytes-get-default", [tls_route("t", port=8443)], {"host": "h", "path": "/"}, "default", "deny"),
    ("tls-port-no-sni-gets-default", [tls_route("t", port=8443, hostnames=["api.example.com"])], {"sni": ""},
     "default", "deny"),
    ("tcp-port-matches-everything-http", [tcp_route("c", port=8443)], {"host": "h", "path": "/"},
     f"TCPRoute {GLOBAL}/c", "forward"),
    ("tcp-port-matches-everything-tls", [tcp_route("c", port=8443)], {"sni": "x.example.com"},
     f"TCPRoute {GLOBAL}/c", "forward"),
    ("tcp-port-matches-everything-opaque", [tcp_route("c", port=8443)], {}, f"TCPRoute {GLOBAL}/c", "forward"),
    ("no-routes-http-gets-default-http", [], {"host": "h", "path": "/"}, "default", "deny"),
]


@pytest.mark.parametrize(("routes", "request_kind", "route", "action"), [c[1:] for c in PROTOCOL],
                         ids=[c[0] for c in PROTOCOL])
def test_protocol_per_port(routes: list, request_kind: dict, route: str, action: str) -> None:
    verdict = explain([egress("internet"), *routes], "app", IP, 8443, **request_kind)
    assert (verdict["route"], verdict["action"]) == (route, action)


def test_no_routes_deny_http_is_403_and_other_bytes_are_closed() -> None:
    docs = [egress("internet")]
    assert "HTTP 403" in explain(docs, "app", IP, 8080, host="h", path="/")["reason"]
    assert "closed" in explain(docs, "app", IP, 8080)["reason"]


def test_consumer_route_kind_does_not_change_other_namespaces_traffic() -> None:
    docs = [egress("internet"), http_route("producer", rules=[path_rule("/get")]),
            grpc_route("consumer", "team-a", en_ns=GLOBAL, port=80)]
    verdict = explain(docs, "team-b", IP, 80, host="h", path="/get")
    assert verdict["route"] == f"HTTPRoute {GLOBAL}/producer"
