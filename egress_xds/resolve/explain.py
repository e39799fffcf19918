"""Explain one connection: which EgressNetwork governs it, which route matches, the verdict.

In: a namespace's ``ir.NamespaceEgress`` and a connection (destination IP and port, and an
SNI, or an HTTP host/path/method, or nothing for opaque bytes).
Out: ``Verdict`` ({egress_network, route, action, destination, reason}).
It reads the same IR the Envoy builders turn into filter chains and routes, and follows
Envoy's matching order (longest destination prefix; exact SNI, then longest ``*.`` suffix;
virtual host by exact domain, then longest wildcard, then ``*``; first matching route).
Called by ``egress-xds explain`` (via ``egress_xds.translate``).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from egress_xds import ir

Action = str  # "forward" | "redirect" | "deny" | "invalid"


@dataclass(frozen=True)
class Verdict:
    egress_network: str | None
    route: str | None
    action: Action
    destination: str | None
    reason: str

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def match_server_name(routes: tuple[ir.TlsRoute, ...], sni: str | None) -> ir.TlsRoute | None:
    """Envoy's server_names order: exact, then the longest matching ``*.suffix``, then a
    chain without server names."""
    if sni:
        name = sni.lower().rstrip(".")
        for route in routes:
            if name in route.server_names:
                return route
        best: tuple[int, ir.TlsRoute] | None = None
        for route in routes:
            for pattern in route.server_names:
                if pattern.startswith("*.") and name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                    if best is None or len(pattern) > best[0]:
                        best = (len(pattern), route)
        if best is not None:
            return best[1]
    for route in routes:
        if not route.server_names:
            return route
    return None


def select_virtual_host(hosts: tuple[ir.VirtualHost, ...], host: str) -> ir.VirtualHost | None:
    """Envoy's virtual host order: exact domain, longest ``*.suffix``, then ``*``."""
    name = host.lower()
    if name.startswith("["):  # [v6]:port
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.rstrip(".")
    for vh in hosts:
        if vh.domain == name:
            return vh
    best: ir.VirtualHost | None = None
    for vh in hosts:
        if vh.domain.startswith("*.") and name.endswith(vh.domain[1:]) and len(name) > len(vh.domain) - 1:
            if best is None or len(vh.domain) > len(best.domain):
                best = vh
    if best is not None:
        return best
    return next((vh for vh in hosts if vh.domain == "*"), None)


def _value_matches(expected: ir.HeaderMatch, actual: str | None) -> bool:
    if actual is None:
        return False
    if expected.regex:
        return re.fullmatch(expected.value, actual) is not None
    return actual == expected.value


def match_request(
    m: ir.HttpMatch, path: str, method: str, headers: Mapping[str, str], query: Mapping[str, str]
) -> bool:
    if m.path_kind == "exact" and path != m.path:
        return False
    if m.path_kind == "prefix" and m.path != "/" and not (path == m.path or path.startswith(m.path + "/")):
        return False
    if m.path_kind == "raw-prefix" and not path.startswith(m.path):
        return False
    if m.path_kind == "regex" and re.fullmatch(m.path, path) is None:
        return False
    if m.method and m.method != method.upper():
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    if not all(_value_matches(h, lowered.get(h.name)) for h in m.headers):
        return False
    return all(_value_matches(q, query.get(q.name)) for q in m.query)


def backends_verdict(
    backends: tuple[ir.Backend, ...], destination: str, en: str, route: str
) -> Verdict:
    total = sum(b.weight for b in backends)
    if total == 0:
        return Verdict(en, route, "invalid", None, "every backendRef has weight 0")
    chosen = max(backends, key=lambda b: b.weight)  # max keeps the first of equal weights
    split = ""
    if len(backends) > 1:
        parts = ", ".join(f"{_backend_label(b, destination)} {b.weight * 100 // total}%" for b in backends)
        split = f" (split: {parts})"
    if chosen.kind == "passthrough":
        return Verdict(en, route, "forward", destination, f"{route} forwards to the original destination{split}")
    if chosen.kind == "service":
        target = _hostport(chosen.address, chosen.port)
        return Verdict(en, route, "redirect", target,
                       f"{route} redirects to Service {chosen.namespace}/{chosen.name} at {target}{split}")
    return Verdict(en, route, "invalid", None, f"{route} has an invalid backend: {chosen.reason}{split}")


def _backend_label(backend: ir.Backend, destination: str) -> str:
    if backend.kind == "passthrough":
        return destination
    if backend.kind == "service":
        return f"Service {backend.namespace}/{backend.name}:{backend.port}"
    return f"invalid {backend.namespace}/{backend.name}"


def default_verdict(policy: ir.PortPolicy, destination: str, traffic: str, port: int) -> Verdict:
    governor = policy.governor
    en = governor.label
    if governor.allow:
        return Verdict(en, "default", "forward", destination,
                       f"no route of {en} matches this {traffic} traffic on port {port}; trafficPolicy Allow forwards")
    how = {"http": "HTTP 403", "grpc": "gRPC PERMISSION_DENIED"}.get(traffic, "the connection is closed")
    return Verdict(en, "default", "deny", None,
                   f"no route of {en} matches this {traffic} traffic on port {port}; trafficPolicy Deny: {how}")


def explain(
    egress: ir.NamespaceEgress,
    ip: str,
    port: int,
    *,
    sni: str | None = None,
    host: str | None = None,
    path: str | None = None,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> Verdict:
    address = ipaddress.ip_address(ip)
    destination = _hostport(str(address), port)
    if port == egress.listener_port:
        return Verdict(None, None, "deny", None, f"port {port} is the sidecar's own outbound listener; connections to it are closed")
    governor = egress.governor_for(address)
    if governor.kind != "egress-network":
        where = "inside the cluster networks: not egress" if governor.kind == "cluster" else "outside the cluster networks: fallback"
        return Verdict(None, None, "forward", destination, f"no EgressNetwork matches {address} ({where}); forwarded unchanged")
    policy = egress.policy(governor, port)
    traffic = "tls" if sni is not None else "http" if (host is not None or path is not None or method is not None) else "opaque"
    if port in egress.no_detect_ports:
        traffic = "opaque"  # the listener does not inspect bytes on opaque ports
    en = governor.label

    if policy.protocol == "tcp" and policy.tcp_route is not None:
        return backends_verdict(policy.tcp_route.backends, destination, en, policy.tcp_route.route.label)
    if policy.protocol == "tls" and traffic == "tls":
        tls = match_server_name(policy.tls_routes, sni)
        if tls is not None:
            return backends_verdict(tls.backends, destination, en, tls.route.label)
    if policy.protocol in ("http", "grpc") and traffic == "http":
        vh = select_virtual_host(policy.virtual_hosts, host or str(address))
        request_path, _, query_string = (path or "/").partition("?")
        if query is None:
            query = dict(urllib.parse.parse_qsl(query_string, keep_blank_values=True))
        for rule in vh.rules if vh else ():
            if match_request(rule.match, request_path, method or ("POST" if policy.protocol == "grpc" else "GET"),
                             headers or {}, query or {}):
                if rule.redirect is not None:
                    return Verdict(en, rule.route.label, "redirect", None,
                                   f"{rule.route.label} answers with HTTP {rule.redirect.status} (RequestRedirect)")
                return backends_verdict(rule.backends, destination, en, rule.route.label)
        return default_verdict(policy, destination, "grpc" if policy.protocol == "grpc" else "http", port)
    # HTTP bytes where the policy does not route HTTP (a TLS or TCP port, an opaque port)
    # are just bytes: the default opaque action applies (close, not 403).
    return default_verdict(policy, destination, "opaque" if traffic == "http" else traffic, port)
