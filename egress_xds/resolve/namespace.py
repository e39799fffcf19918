"""Build the IR of one client namespace: address partition x port policies (spec §2-§4).

In: the ``World``, its ``Attachments`` and a client namespace name (any name: a namespace
without objects gets the global egress namespace's view).
Out: ``ir.NamespaceEgress``. It depends only on the candidates of that namespace, the
routes programmed on them that the namespace can see (producer routes, and consumer routes
living in the namespace) and the Services those routes name.
Called by ``egress_xds.translate`` per namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from egress_xds import ir
from egress_xds.model.objects import (
    EgressNetwork,
    GRPCRoute,
    GRPCRouteMatch,
    HTTPRoute,
    HTTPRouteFilter,
    HTTPRouteMatch,
    Route,
    TCPRoute,
    TLSRoute,
)
from egress_xds.model.objects import HeaderModifier as ModelHeaderModifier
from egress_xds.resolve.partition import egress_partition, governor_of
from egress_xds.resolve.routes import Attachments, ParentStatus
from egress_xds.resolve.world import World, age_order

PASSTHROUGH = ir.Backend("passthrough")


def route_ref(route: Route) -> ir.RouteRef:
    return ir.RouteRef(route.kind, route.metadata.namespace, route.metadata.name)


# --- HTTP and gRPC ------------------------------------------------------------------------


def http_match(match: HTTPRouteMatch) -> ir.HttpMatch:
    path = match.path
    if path.type == "Exact":
        kind, value = "exact", path.value
    elif path.type == "RegularExpression":
        kind, value = "regex", path.value
    else:
        # Gateway API ignores a trailing '/' on a PathPrefix; '/' itself matches everything.
        kind, value = "prefix", (path.value.rstrip("/") or "/")
    return ir.HttpMatch(
        path_kind=kind,  # type: ignore[arg-type]
        path=value,
        method=match.method,
        headers=tuple(ir.HeaderMatch(h.name.lower(), h.value, h.type == "RegularExpression") for h in match.headers),
        query=tuple(ir.HeaderMatch(q.name, q.value, q.type == "RegularExpression") for q in match.queryParams),
    )


def grpc_match(match: GRPCRouteMatch) -> ir.HttpMatch:
    headers = tuple(ir.HeaderMatch(h.name.lower(), h.value, h.type == "RegularExpression") for h in match.headers)
    m = match.method
    if m is None:
        return ir.HttpMatch(headers=headers)
    if m.type == "Exact":
        if m.service and m.method:
            return ir.HttpMatch("exact", f"/{m.service}/{m.method}", headers=headers)
        if m.service:
            return ir.HttpMatch("raw-prefix", f"/{m.service}/", headers=headers)
        return ir.HttpMatch("regex", f"/[^/]+/{re.escape(m.method or '')}", headers=headers)
    service = m.service or "[^/]+"
    method = m.method or "[^/]+"
    return ir.HttpMatch("regex", f"/{service}/{method}", headers=headers)


def _edits(modifier: ModelHeaderModifier | None) -> ir.HeaderEdits | None:
    if modifier is None:
        return None
    return ir.HeaderEdits(
        set=tuple((h.name, h.value) for h in modifier.set),
        add=tuple((h.name, h.value) for h in modifier.add),
        remove=tuple(modifier.remove),
    )


def _filters(filters: Sequence[HTTPRouteFilter]) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in filters:
        if f.type == "RequestHeaderModifier":
            out["request_headers"] = _edits(f.requestHeaderModifier)
        elif f.type == "ResponseHeaderModifier":
            out["response_headers"] = _edits(f.responseHeaderModifier)
        elif f.type == "RequestRedirect" and f.requestRedirect is not None:
            r = f.requestRedirect
            out["redirect"] = ir.Redirect(
                status=r.statusCode,
                scheme=r.scheme,
                hostname=r.hostname,
                port=r.port,
                full_path=r.path.replaceFullPath if r.path and r.path.type == "ReplaceFullPath" else None,
                prefix_path=r.path.replacePrefixMatch if r.path and r.path.type == "ReplacePrefixMatch" else None,
            )
        elif f.type == "URLRewrite" and f.urlRewrite is not None:
            w = f.urlRewrite
            out["rewrite"] = ir.Rewrite(
                hostname=w.hostname,
                full_path=w.path.replaceFullPath if w.path and w.path.type == "ReplaceFullPath" else None,
                prefix_path=w.path.replacePrefixMatch if w.path and w.path.type == "ReplacePrefixMatch" else None,
            )
    return out


def http_rules(route: HTTPRoute | GRPCRoute, status: ParentStatus) -> list[ir.HttpRule]:
    rules: list[ir.HttpRule] = []
    route_rules: Sequence[Any] = route.spec.rules
    for i, rule in enumerate(route_rules):
        backends = status.backends[i] if status.backends[i] else (PASSTHROUGH,)
        extras = _filters(rule.filters)
        for j, match in enumerate(rule.matches):
            m = http_match(match) if isinstance(route, HTTPRoute) else grpc_match(match)  # type: ignore[arg-type]
            rules.append(ir.HttpRule(route_ref(route), i, j, m, backends, **extras))  # type: ignore[arg-type]
    return rules


_PATH_RANK = {"exact": 0, "prefix": 1, "raw-prefix": 1, "regex": 2, None: 3}


def rule_precedence(rule: ir.HttpRule) -> tuple[int, int, int, int, int]:
    """Gateway API rule precedence (spec §3), most specific first.

    1. Exact path, then the longest prefix (Decision: Exact beats a PathPrefix of the same
       length), then regular expressions, then no path match.
    2. A match with a method beats one without.
    3. More header matches, then more query parameter matches.
    Ties go to the oldest route, then namespace/name (applied by the caller).
    """
    m = rule.match
    return (
        _PATH_RANK[m.path_kind],
        -len(m.path),
        0 if m.method else 1,
        -len(m.headers),
        -len(m.query),
    )


def host_specificity(hostnames: Sequence[str], domain: str) -> tuple[int, int] | None:
    """How specifically a route's hostnames cover a virtual host domain; None if they don't.

    1. An exact hostname equal to the domain is the most specific.
    2. A wildcard ``*.suffix`` covers names with at least one more label; longer first.
    3. A route without hostnames covers every domain, least specifically.
    """
    if not hostnames:
        return (2, 0)
    best: tuple[int, int] | None = None
    for host in hostnames:
        if host.startswith("*."):
            suffix = host[1:]
            if host == domain or (domain.endswith(suffix) and len(domain) > len(suffix) and domain != "*"):
                key = (1, -len(host))
            else:
                continue
        elif host == domain:
            key = (0, 0)
        else:
            continue
        if best is None or key < best:
            best = key
    return best


def virtual_hosts(routes: Sequence[tuple[Route, list[ir.HttpRule]]]) -> tuple[ir.VirtualHost, ...]:
    """One virtual host per distinct hostname plus ``*``; each holds every rule whose route
    covers that hostname, most specific host first, then rule precedence (Linkerd falls
    through from a more specific hostname's rules to less specific ones)."""
    domains = sorted({h for route, _ in routes for h in route.spec.hostnames})  # type: ignore[union-attr]
    hosts: list[ir.VirtualHost] = []
    for domain in [*domains, "*"]:
        ranked = []
        for route, rules in routes:
            spec = host_specificity(route.spec.hostnames, domain) if domain != "*" else (  # type: ignore[union-attr]
                (2, 0) if not route.spec.hostnames else None)  # type: ignore[union-attr]
            if spec is None:
                continue
            for rule in rules:
                ranked.append(((spec, rule_precedence(rule), age_order(route), route.kind, rule.rule_index, rule.match_index), rule))
        ranked.sort(key=lambda item: item[0])
        hosts.append(ir.VirtualHost(domain, tuple(rule for _, rule in ranked)))
    return tuple(hosts)


# --- TLS and TCP --------------------------------------------------------------------------


def _stream_backends(status: ParentStatus) -> tuple[ir.Backend, ...]:
    return status.backends[0] if status.backends and status.backends[0] else (PASSTHROUGH,)


def tls_routes(routes: Sequence[tuple[Route, ParentStatus]]) -> tuple[ir.TlsRoute, ...]:
    """SNI table: each hostname goes to its oldest route (then namespace/name); a route
    without hostnames matches any TLS connection, the oldest one wins."""
    ordered = sorted(routes, key=lambda item: age_order(item[0]))
    owner: dict[str, int] = {}
    catch_all: int | None = None
    for index, (route, _status) in enumerate(ordered):
        names = route.spec.hostnames  # type: ignore[union-attr]
        if not names:
            if catch_all is None:
                catch_all = index
            continue
        for name in names:
            owner.setdefault(name, index)
    out: list[ir.TlsRoute] = []
    for index, (route, status) in enumerate(ordered):
        names = tuple(sorted(n for n, i in owner.items() if i == index))
        if names:
            out.append(ir.TlsRoute(route_ref(route), names, _stream_backends(status)))
        if index == catch_all:
            out.append(ir.TlsRoute(route_ref(route), (), _stream_backends(status)))
    return tuple(out)


def tcp_route(routes: Sequence[tuple[Route, ParentStatus]]) -> ir.TcpRoute:
    route, status = min(routes, key=lambda item: age_order(item[0]))
    return ir.TcpRoute(route_ref(route), _stream_backends(status))


# --- Port policies ------------------------------------------------------------------------


def port_policy(
    governor: ir.Governor,
    en: EgressNetwork | None,
    port: int | None,
    visible: Sequence[tuple[Route, ParentStatus]],
    world: World,
) -> ir.PortPolicy:
    if en is None:
        return ir.PortPolicy(governor, port, "opaque")
    opaque = port is not None and port in world.opaque_ports(en)
    tcp = [item for item in visible if isinstance(item[0], TCPRoute)]
    if opaque:
        if tcp:
            return ir.PortPolicy(governor, port, "tcp", tcp_route=tcp_route(tcp))
        return ir.PortPolicy(governor, port, "opaque")
    grpc = [item for item in visible if isinstance(item[0], GRPCRoute)]
    http = [item for item in visible if isinstance(item[0], HTTPRoute)]
    tls = [item for item in visible if isinstance(item[0], TLSRoute)]
    if grpc:
        hosts = virtual_hosts([(r, http_rules(r, s)) for r, s in grpc])  # type: ignore[arg-type]
        return ir.PortPolicy(governor, port, "grpc", virtual_hosts=hosts)
    if http:
        hosts = virtual_hosts([(r, http_rules(r, s)) for r, s in http])  # type: ignore[arg-type]
        return ir.PortPolicy(governor, port, "http", virtual_hosts=hosts)
    if tls:
        return ir.PortPolicy(governor, port, "tls", tls_routes=tls_routes(tls))
    if tcp:
        return ir.PortPolicy(governor, port, "tcp", tcp_route=tcp_route(tcp))
    # No routes: HTTP is detected and gets the default HTTP route.
    return ir.PortPolicy(governor, port, "http", virtual_hosts=(ir.VirtualHost("*", ()),))


def _services(policies: Iterable[ir.PortPolicy]) -> tuple[ir.Backend, ...]:
    found: dict[str, ir.Backend] = {}
    for policy in policies:
        groups: list[tuple[ir.Backend, ...]] = [r.backends for vh in policy.virtual_hosts for r in vh.rules]
        groups += [t.backends for t in policy.tls_routes]
        if policy.tcp_route is not None:
            groups.append(policy.tcp_route.backends)
        for backends in groups:
            for b in backends:
                if b.kind == "service":
                    found.setdefault(b.cluster, ir.Backend("service", 1, b.namespace, b.name, b.address, b.port))
    return tuple(found[name] for name in sorted(found))


class SharedWork:
    """Results that namespaces with the same inputs share, for one world: the partition of a
    candidate set (every namespace on the global view has the same), and port policies of
    the same EgressNetwork, port and visible routes. Keyed by object identity; each entry
    holds its key objects, so their ids stay theirs while the entry lives."""

    def __init__(self) -> None:
        self._partitions: dict[int, tuple[object, tuple[ir.Destination, ...]]] = {}
        self._policies: dict[tuple[object, ...], tuple[object, ir.PortPolicy]] = {}

    def partition(self, candidates: tuple[EgressNetwork, ...], world: World) -> tuple[ir.Destination, ...]:
        found = self._partitions.get(id(candidates))
        if found is None:
            found = (candidates, egress_partition(candidates, world.options))
            self._partitions[id(candidates)] = found
        return found[1]

    def port_policy(self, governor: ir.Governor, en: EgressNetwork | None, port: int | None,
                    visible: Sequence[tuple[Route, ParentStatus]], world: World) -> ir.PortPolicy:
        key = (governor, id(en), port, *(id(status) for _, status in visible))
        found = self._policies.get(key)
        if found is None:
            found = ((en, tuple(visible)), port_policy(governor, en, port, visible, world))
            self._policies[key] = found
        return found[1]


def translate_namespace(world: World, attachments: Attachments, namespace: str,
                        shared: SharedWork | None = None) -> ir.NamespaceEgress:
    shared = shared or SharedWork()
    candidates = world.candidates(namespace)
    destinations = shared.partition(candidates, world)
    governors = sorted({d.governor for d in destinations})
    by_governor = {governor_of(en): en for en in candidates}
    egress_governors = [g for g in governors if g in by_governor]

    # Routes this namespace sees on each (governor, port): producer routes of the
    # EgressNetwork's namespace, and consumer routes living in this namespace.
    visible: dict[tuple[ir.Governor, int], list[tuple[Route, ParentStatus]]] = {}
    for governor in egress_governors:
        for port, items in attachments.programmed_on((governor.namespace, governor.name)).items():
            seen = [(r, s) for r, s in items if r.metadata.namespace in (governor.namespace, namespace)]
            if seen:
                visible[(governor, port)] = seen

    # Opaque ports need no chains of their own when every EgressNetwork treats them as
    # opaque: the listener then skips protocol detection there, so the port-less chains
    # see raw bytes and apply the default opaque action. A port that some treat as opaque
    # and others not, or that has routes, gets its own copy of the partition.
    opaque_sets = [world.opaque_ports(by_governor[g]) for g in egress_governors]
    maybe_opaque = set().union(*opaque_sets) if opaque_sets else set(world.options.opaque_ports)
    everywhere_opaque = {p for p in maybe_opaque if all(p in s for s in opaque_sets)}
    ports = {port for _, port in visible} | (maybe_opaque - everywhere_opaque)
    ports.discard(world.options.outbound_port)

    policies: list[ir.PortPolicy] = []
    for governor in governors:
        en = by_governor.get(governor)
        policies.append(shared.port_policy(governor, en, None, [], world))
        for port in sorted(ports):
            policies.append(shared.port_policy(governor, en, port, visible.get((governor, port), []), world))

    return ir.NamespaceEgress(
        namespace=namespace,
        listener_port=world.options.outbound_port,
        listener_addresses=world.options.listener_addresses,
        detect_timeout_ms=world.options.detect_timeout_ms,
        destinations=destinations,
        ports=tuple(sorted(ports)),
        policies=tuple(policies),
        no_detect_ports=tuple(sorted(everywhere_opaque - {world.options.outbound_port})),
        services=_services(policies),
    )
