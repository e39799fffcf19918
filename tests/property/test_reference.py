"""Table tests of the brute-force reference itself, each row computed by hand from the spec.

The property test trusts ``reference.py``; these rows are what makes that trust earned.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from .reference import (
    World,
    block_size,
    en_is_accepted,
    en_is_valid,
    host_specificity,
    path_matches,
)

GLOBAL = "linkerd-egress"


def en(ns: str, name: str, policy: str = "Allow", networks: Any = None, ts: str | None = None,
       opaque: str | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if ts:
        md["creationTimestamp"] = ts
    if opaque is not None:
        md["annotations"] = {"config.linkerd.io/opaque-ports": opaque}
    spec: dict[str, Any] = {"trafficPolicy": policy}
    if networks is not None:
        spec["networks"] = networks
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork", "metadata": md, "spec": spec}


def parent(name: str, port: int | None, ns: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": name}
    if ns:
        ref["namespace"] = ns
    if port is not None:
        ref["port"] = port
    return ref


def route(kind: str, ns: str, name: str, parents: list[dict[str, Any]], ts: str | None = None,
          **spec: Any) -> dict[str, Any]:
    api = "gateway.networking.k8s.io/v1" if kind == "HTTPRoute" else "gateway.networking.k8s.io/v1alpha2"
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if ts:
        md["creationTimestamp"] = ts
    return {"apiVersion": api, "kind": kind, "metadata": md, "spec": {"parentRefs": parents, **spec}}


def service(ns: str, name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}


def v(en_label: str | None, route_label: str | None, action: str, dest: str | None) -> dict[str, Any]:
    return {"egress_network": en_label, "route": route_label, "action": action, "destination": dest}


@pytest.mark.parametrize(
    ("cidr", "size"),
    [("10.0.0.0/8", 2**24 - 2), ("1.2.3.0/24", 254), ("1.2.3.0/30", 2), ("1.2.3.0/31", 2),
     ("1.2.3.4/32", 1), ("2001:db8::/64", 2**64), ("2001:db8::1/128", 1), ("0.0.0.0/0", 2**32 - 2)],
)
def test_block_size(cidr: str, size: int) -> None:
    assert block_size(ipaddress.ip_network(cidr)) == size


@pytest.mark.parametrize(
    ("networks", "valid"),
    [
        (None, True),
        ([], False),
        ([{"cidr": "203.0.113.0/24", "except": ["203.0.113.8/29"]}], True),
        ([{"cidr": "203.0.113.1/24"}], True),  # host bits allowed
        ([{"cidr": "203.0.113.7"}], True),  # bare IP
        ([{"cidr": "203.0.113.0/24", "except": ["198.51.100.0/29"]}], False),
        ([{"cidr": "203.0.113.0/24", "except": ["203.0.113.0/24"]}], False),
        ([{"cidr": "203.0.113.0/24", "except": ["203.0.0.0/16"]}], False),
        ([{"cidr": "203.0.113.0/24", "except": ["2001:db8::/64"]}], False),
        ([{"cidr": "not-a-cidr"}], False),
    ],
)
def test_en_validity(networks: Any, valid: bool) -> None:
    assert en_is_valid(en(GLOBAL, "x", networks=networks)) is valid


@pytest.mark.parametrize(
    ("networks", "accepted"),
    [
        (None, True),
        ([{"cidr": "203.0.113.0/24"}], True),
        ([{"cidr": "10.1.0.0/16"}], False),
        ([{"cidr": "0.0.0.0/0"}], False),
        ([{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16"]}], True),
        ([{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/9", "10.128.0.0/9", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16"]}], True),
        ([{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/9", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16"]}], False),
        ([{"cidr": "10.1.0.0/16", "except": ["10.1.0.0/17", "10.1.128.0/17"]}], True),
        ([{"cidr": "fd00:1::/32"}], False),
        ([{"cidr": "::/0", "except": ["fd00::/8"]}], True),
    ],
)
def test_en_acceptance(networks: Any, accepted: bool) -> None:
    assert en_is_accepted(en(GLOBAL, "x", networks=networks)) is accepted


@pytest.mark.parametrize(
    ("pattern", "host", "result"),
    [
        ("example.com", "Example.COM.", (2, 11)),
        ("*.example.com", "a.example.com", (1, 13)),
        ("*.example.com", "a.b.example.com", (1, 13)),
        ("*.example.com", "example.com", None),
        ("*.example.com", "xexample.com", None),
        ("api.example.com", "example.com", None),
    ],
)
def test_host_specificity(pattern: str, host: str, result: Any) -> None:
    assert host_specificity(pattern, host) == result


@pytest.mark.parametrize(
    ("kind", "value", "path", "result"),
    [
        ("PathPrefix", "/x", "/x", True),
        ("PathPrefix", "/x", "/x/y", True),
        ("PathPrefix", "/x", "/xy", False),
        ("PathPrefix", "/x/", "/x", True),
        ("PathPrefix", "/x/", "/x/y", True),
        ("PathPrefix", "/", "/anything", True),
        ("Exact", "/x", "/x", True),
        ("Exact", "/x", "/x/", False),
    ],
)
def test_path_matches(kind: str, value: str, path: str, result: bool) -> None:
    assert path_matches({"path": {"type": kind, "value": value}}, path) is result


def test_winner_smallest_block_then_oldest_then_name() -> None:
    world = World([
        en(GLOBAL, "wide", networks=[{"cidr": "203.0.0.0/16"}]),
        # /24 minus a /25 (126 hosts) = 128 hosts: smaller than a /24, larger than a /25
        en(GLOBAL, "holey", policy="Deny", networks=[{"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}]),
        en(GLOBAL, "b", networks=[{"cidr": "203.0.113.0/25"}], ts="2024-01-01T00:00:00Z"),
        en(GLOBAL, "a", networks=[{"cidr": "203.0.113.0/25"}], ts="2024-01-02T00:00:00Z"),
        en(GLOBAL, "z", networks=[{"cidr": "203.0.113.0/25"}], ts="2024-01-01T00:00:00Z"),
    ])
    assert world.explain("ns", "203.0.113.5", 80)["egress_network"] == f"{GLOBAL}/b"
    assert world.explain("ns", "203.0.113.200", 80)["egress_network"] == f"{GLOBAL}/wide"
    assert world.explain("ns", "203.0.1.1", 80) == v(f"{GLOBAL}/wide", "default", "forward", "203.0.1.1:80")
    assert world.explain("ns", "198.51.100.1", 80) == v(None, None, "forward", "198.51.100.1:80")
    # missing timestamps count as oldest
    world = World([en(GLOBAL, "b", networks=[{"cidr": "203.0.113.0/25"}]),
                   en(GLOBAL, "a", networks=[{"cidr": "203.0.113.0/25"}], ts="2024-01-01T00:00:00Z")])
    assert world.explain("ns", "203.0.113.5", 80)["egress_network"] == f"{GLOBAL}/b"


def test_local_network_hides_global_ones() -> None:
    world = World([
        en(GLOBAL, "g", networks=[{"cidr": "203.0.113.0/24"}], policy="Deny"),
        en("ns-a", "l", networks=[{"cidr": "198.51.100.0/24"}]),
        en("ns-b", "bad", networks=[]),  # invalid: ns-b has no EgressNetwork
    ])
    assert world.explain("ns-a", "203.0.113.1", 443) == v(None, None, "forward", "203.0.113.1:443")
    assert world.explain("ns-b", "203.0.113.1", 443) == v(f"{GLOBAL}/g", "default", "deny", None)
    assert world.explain("ns-a", "198.51.100.1", 443) == v("ns-a/l", "default", "forward", "198.51.100.1:443")


def test_omitted_networks_and_ipv6() -> None:
    world = World([en(GLOBAL, "all", policy="Deny"),
                   en(GLOBAL, "v6", networks=[{"cidr": "2001:db8::/64", "except": ["2001:db8::/120"]}])])
    assert world.explain("ns", "10.1.2.3", 80) == v(None, None, "forward", "10.1.2.3:80")
    assert world.explain("ns", "8.8.8.8", 80) == v(f"{GLOBAL}/all", "default", "deny", None)
    assert world.explain("ns", "2001:db8::1", 80)["egress_network"] == f"{GLOBAL}/all"
    assert world.explain("ns", "2001:db8::1:1", 80) == v(f"{GLOBAL}/v6", "default", "forward", "[2001:db8::1:1]:80")


def test_routes_http_tls_tcp_and_backends() -> None:
    net = [{"cidr": "203.0.113.0/24"}]
    world = World([
        en(GLOBAL, "web", policy="Deny", networks=net),
        service("ns-a", "svc", "198.51.100.210"),
        route("HTTPRoute", GLOBAL, "prod", [parent("web", 80)], hostnames=["*.example.com"],
              rules=[{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}]},
                     {"matches": [{"path": {"type": "Exact", "value": "/api"}}],
                      "filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "x.org"}}]}]),
        route("HTTPRoute", "ns-a", "cons", [parent("web", 80, GLOBAL)], hostnames=["api.example.com"],
              rules=[{"backendRefs": [{"name": "svc", "port": 80}]}]),
        route("TLSRoute", GLOBAL, "tls-any", [parent("web", 443)], rules=[{}]),
        route("TLSRoute", GLOBAL, "tls-ex", [parent("web", 443)], hostnames=["api.example.com"],
              rules=[{"backendRefs": [{"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "other"}]}]),
        route("TCPRoute", GLOBAL, "tcp-new", [parent("web", 5432)], ts="2024-02-01T00:00:00Z", rules=[{}]),
        route("TCPRoute", GLOBAL, "tcp-old", [parent("web", 5432)], ts="2024-01-01T00:00:00Z",
              rules=[{"backendRefs": [{"name": "svc", "port": 5432}]}]),
        route("HTTPRoute", GLOBAL, "on-opaque", [parent("web", 5432)]),
        route("TCPRoute", GLOBAL, "loser", [parent("web", 80)], rules=[{}]),  # conflicted by HTTPRoutes
    ])
    ip = "203.0.113.9"
    web = f"{GLOBAL}/web"
    http = {"host": "a.example.com", "method": "GET"}
    assert world.explain("ns-b", ip, 80, path="/api/v", **http) == v(web, f"HTTPRoute {GLOBAL}/prod", "forward", f"{ip}:80")
    assert world.explain("ns-b", ip, 80, path="/api", **http) == v(web, f"HTTPRoute {GLOBAL}/prod", "redirect", None)
    assert world.explain("ns-b", ip, 80, path="/apix", **http) == v(web, "default", "deny", None)
    assert world.explain("ns-b", ip, 80) == v(web, "default", "deny", None)
    assert world.explain("ns-b", ip, 80, sni="a.example.com") == v(web, "default", "deny", None)
    # the consumer route's exact hostname beats the producer's wildcard, only for ns-a
    assert world.explain("ns-a", ip, 80, host="API.example.com.", path="/api", method="GET") == \
        v(web, "HTTPRoute ns-a/cons", "redirect", "198.51.100.210:80")
    assert world.explain("ns-c", ip, 80, host="api.example.com", path="/api", method="GET") == \
        v(web, f"HTTPRoute {GLOBAL}/prod", "redirect", None)
    assert world.explain("ns-a", ip, 443, sni="api.example.com") == v(web, f"TLSRoute {GLOBAL}/tls-ex", "invalid", None)
    assert world.explain("ns-a", ip, 443, sni="b.example.com") == v(web, f"TLSRoute {GLOBAL}/tls-any", "forward", f"{ip}:443")
    assert world.explain("ns-a", ip, 443, host="b.example.com", path="/", method="GET") == v(web, "default", "deny", None)
    # opaque port: the oldest TCPRoute, whatever the bytes; the HTTPRoute there is not programmed
    for query in ({}, {"sni": "x.example.com"}, {"host": "x", "path": "/", "method": "GET"}):
        assert world.explain("ns-a", ip, 5432, **query) == v(web, f"TCPRoute {GLOBAL}/tcp-old", "invalid", None)
    # the Service lives in ns-a, the TCPRoute's backend namespace defaults to linkerd-egress


def test_weights_and_service_backends() -> None:
    net = [{"cidr": "203.0.113.0/24"}]
    svc_ip = "198.51.100.220"

    def world_with(refs: list[dict[str, Any]]) -> dict[str, Any]:
        w = World([en(GLOBAL, "web", networks=net), service(GLOBAL, "svc", svc_ip),
                   route("TCPRoute", GLOBAL, "t", [parent("web", 9000)], rules=[{"backendRefs": refs}])])
        return w.explain("ns", "203.0.113.1", 9000)

    me = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "web"}
    assert world_with([me])["action"] == "forward"
    assert world_with([{"name": "svc", "port": 8080}])["destination"] == f"{svc_ip}:8080"
    assert world_with([{"name": "svc"}])["action"] == "invalid"
    assert world_with([{"name": "nope", "port": 80}])["action"] == "invalid"
    assert world_with([{"kind": "Pod", "name": "svc", "port": 80}])["action"] == "invalid"
    assert world_with([{"name": "svc", "port": 80, "weight": 1}, {**me, "weight": 1}])["action"] == "redirect"
    assert world_with([{"name": "svc", "port": 80, "weight": 1}, {**me, "weight": 2}])["action"] == "forward"
    assert world_with([{"name": "svc", "port": 80, "weight": 0}, {**me, "weight": 0}])["action"] == "invalid"


def test_non_accepted_network_governs_without_routes() -> None:
    world = World([en(GLOBAL, "inside", policy="Deny", networks=[{"cidr": "10.1.0.0/16"}]),
                   route("TCPRoute", GLOBAL, "t", [parent("inside", 9000)], rules=[{}])])
    assert world.programmed == []
    assert world.explain("ns", "10.1.0.5", 9000) == v(f"{GLOBAL}/inside", "default", "deny", None)


def test_opaque_annotation_replaces_default_list() -> None:
    world = World([en(GLOBAL, "web", networks=[{"cidr": "203.0.113.0/24"}], opaque="8080"),
                   route("HTTPRoute", GLOBAL, "h5432", [parent("web", 5432)]),
                   route("HTTPRoute", GLOBAL, "h8080", [parent("web", 8080)])])
    q = {"host": "x.org", "path": "/", "method": "GET"}
    assert world.explain("ns", "203.0.113.1", 5432, **q)["route"] == f"HTTPRoute {GLOBAL}/h5432"
    assert world.explain("ns", "203.0.113.1", 8080, **q)["route"] == "default"


def test_route_without_port_or_with_unsupported_filter_is_not_programmed() -> None:
    world = World([
        en(GLOBAL, "web", networks=[{"cidr": "203.0.113.0/24"}]),
        route("HTTPRoute", GLOBAL, "noport", [parent("web", None)]),
        route("HTTPRoute", GLOBAL, "mirror", [parent("web", 80)],
              rules=[{"filters": [{"type": "RequestMirror"}]}]),
        route("TLSRoute", GLOBAL, "two", [parent("web", 443)], rules=[{}, {}]),
    ])
    assert world.programmed == []
