"""Hand-written worlds for corners random generation rarely reaches, run as explicit examples.

Each entry is (manifests, queries), the same shape ``strategies.cases()`` draws; the property
test runs them first, on every run, in CI too. Each comment says which rule the corner pins.
"""

from __future__ import annotations

from typing import Any

from .reference import GLOBAL_NAMESPACE as G
from .strategies import Query

Case = tuple[list[dict[str, Any]], list[Query]]


def en(ns: str, name: str, networks: Any = None, policy: str = "Allow", ts: str | None = None,
       opaque: str | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if ts:
        md["creationTimestamp"] = ts
    if opaque is not None:
        md["annotations"] = {"config.linkerd.io/opaque-ports": opaque}
    spec: dict[str, Any] = {"trafficPolicy": policy}
    if networks is not None:
        spec["networks"] = [{"cidr": c[0], "except": list(c[1:])} if len(c) > 1 else {"cidr": c[0]}
                            for c in networks]
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork", "metadata": md, "spec": spec}


def route(kind: str, ns: str, name: str, en_name: str, port: int, en_ns: str = G, ts: str | None = None,
          **spec: Any) -> dict[str, Any]:
    api = "gateway.networking.k8s.io/v1" if kind == "HTTPRoute" else "gateway.networking.k8s.io/v1alpha2"
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if ts:
        md["creationTimestamp"] = ts
    if kind != "HTTPRoute":
        spec.setdefault("rules", [{}])
    parent = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": en_name, "namespace": en_ns, "port": port}
    return {"apiVersion": api, "kind": kind, "metadata": md, "spec": {"parentRefs": [parent], **spec}}


def prefix(value: str, **extra: Any) -> dict[str, Any]:
    return {"matches": [{"path": {"type": "PathPrefix", "value": value}}], **extra}


T1, T2 = "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"
REDIRECT = [{"type": "RequestRedirect", "requestRedirect": {"hostname": "y.example.net"}}]
IP = "203.0.113.1"
NET = [("203.0.113.0/24",)]


def http(ns: str, port: int, path: str, host: str = "x.org", method: str = "GET", ip: str = IP) -> Query:
    return Query(ns, ip, port, host=host, path=path, method=method)


CORNER_CASES: list[Case] = [
    # IPv4 host counts: a /30 (2 hosts) ties a /31 (2 hosts); the older /30 wins.
    ([en(G, "b30", [("203.0.113.0/30",)], ts=T1), en(G, "a31", [("203.0.113.0/31",)], ts=T2)],
     [Query("ns-d", IP, 80)]),
    # /24 minus a /25 = 254 - 126 = 128 hosts, more than a /25's 126: the /25 wins.
    ([en(G, "holey", [("203.0.113.0/24", "203.0.113.128/25")]), en(G, "half", [("203.0.113.0/25",)], ts=T1)],
     [Query("ns-d", IP, 80)]),
    # IPv6 sizes are exact: a /63 minus a /64 equals a /64; then the older wins.
    ([en(G, "a", [("2001:db8::/63", "2001:db8:0:1::/64")], ts=T2), en(G, "b", [("2001:db8::/64",)], ts=T1)],
     [Query("ns-d", "2001:db8::1", 80)]),
    # An entry fully negated by two excepts matches nothing; the other entry still counts.
    ([en(G, "zero", [("203.0.113.6/31", "203.0.113.6/32", "203.0.113.7/32"), ("203.0.113.0/24",)], ts=T2),
      en(G, "other", [("203.0.113.0/24",)], ts=T1)],
     [Query("ns-d", "203.0.113.6", 80), Query("ns-d", "203.0.113.9", 80)]),
    # PathPrefix "/api/" equals "/api" (trailing slash ignored, also for length): the method-less
    # tie goes to the older route; "/apix" matches neither.
    ([en(G, "w", NET),
      route("HTTPRoute", G, "slash", "w", 80, ts=T2, rules=[prefix("/api/")]),
      route("HTTPRoute", G, "noslash", "w", 80, ts=T1, rules=[prefix("/api", filters=REDIRECT)])],
     [http("ns-d", 80, "/api/v1"), http("ns-d", 80, "/api"), http("ns-d", 80, "/apix")]),
    # Exact beats a PathPrefix of the same length even when the prefix has a method.
    ([en(G, "w", NET),
      route("HTTPRoute", G, "p", "w", 80, ts=T1,
            rules=[{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET"}]}]),
      route("HTTPRoute", G, "e", "w", 80, ts=T2, rules=[{"matches": [{"path": {"type": "Exact", "value": "/api"}}]}])],
     [http("ns-d", 80, "/api"), http("ns-d", 80, "/api/x")]),
    # An empty opaque-ports annotation replaces the default list: 5432 is not opaque there.
    ([en(G, "w", NET, opaque=""), route("HTTPRoute", G, "h", "w", 5432)],
     [http("ns-d", 5432, "/"), Query("ns-d", IP, 5432)]),
    # An HTTPRoute on an opaque port is not programmed and does not conflict the TCPRoute.
    ([en(G, "w", NET), route("HTTPRoute", G, "h", "w", 5432), route("TCPRoute", G, "t", "w", 5432)],
     [Query("ns-d", IP, 5432), http("ns-d", 5432, "/")]),
    # A headless Service (clusterIP None) is an invalid backend.
    ([en(G, "w", NET),
      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": G},
       "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
      route("TCPRoute", G, "t", "w", 9000, rules=[{"backendRefs": [{"name": "s", "port": 80}]}])],
     [Query("ns-d", IP, 9000)]),
    # Hostnames: case-insensitive, trailing dot ignored; a wildcard needs one extra label.
    ([en(G, "w", NET), route("HTTPRoute", G, "h", "w", 80, hostnames=["api.example.com"]),
      route("TLSRoute", G, "t", "w", 443, hostnames=["*.example.com"])],
     [http("ns-d", 80, "/", host="API.EXAMPLE.COM."), Query("ns-d", IP, 443, sni="example.com"),
      Query("ns-d", IP, 443, sni="a.b.example.com")]),
    # Conflicts never cross namespaces: a consumer TLSRoute in ns-a hides the producer TCPRoute
    # from ns-a's clients only; every other client still gets the TCPRoute.
    ([en(G, "w", NET), route("TLSRoute", "ns-a", "tls", "w", 80), route("TCPRoute", G, "tcp", "w", 80)],
     [Query("ns-d", IP, 80), Query(G, IP, 80, sni="a.example.com"), Query("ns-a", IP, 80, sni="a.example.com")]),
    # ... and two consumer routes in different namespaces do not conflict each other.
    ([en(G, "w", NET), route("TLSRoute", "ns-a", "tls", "w", 80), route("TCPRoute", "ns-b", "tcp", "w", 80)],
     [Query("ns-b", IP, 80), Query("ns-a", IP, 80, sni="a.example.com")]),
]
