"""The world the resolver reads: validated objects indexed by kind and namespace, plus options.

In: the valid objects of ``model`` and ``TranslatorOptions`` (from CLI flags).
Out: ``World``, an immutable index the rest of ``resolve`` queries: ``World.build`` from all
objects, or ``World.updated`` from the previous world and the objects added and removed, which
shares every index entry the change did not touch (same tuples, same objects), so memoized
results keyed on them stay valid.
Called by ``egress_xds.translate`` whenever the set of objects changes.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeGuard

from egress_xds.model.objects import (
    EgressNetwork,
    GRPCRoute,
    HTTPRoute,
    IPNetwork,
    Route,
    Service,
    TCPRoute,
    TLSRoute,
    TopLevel,
)

DEFAULT_CLUSTER_NETWORKS = ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8")
DEFAULT_OPAQUE_PORTS = (25, 587, 3306, 4444, 5432, 6379, 9300, 11211)
DEFAULT_GLOBAL_NAMESPACE = "linkerd-egress"
DEFAULT_OUTBOUND_PORT = 15001
DEFAULT_CONTROLLER_NAME = "egress-xds.io/policy-controller"
DEFAULT_DETECT_TIMEOUT_MS = 10_000
DEFAULT_LISTENER_ADDRESSES = ("0.0.0.0", "::")


def _networks(values: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(sorted((ipaddress.ip_network(v, strict=False) for v in values), key=_net_sort_key))


def _net_sort_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


@dataclass(frozen=True)
class TranslatorOptions:
    """Flags that shape translation; defaults are those of egress-semantics.md."""

    cluster_networks: tuple[IPNetwork, ...] = field(default_factory=lambda: _networks(DEFAULT_CLUSTER_NETWORKS))
    global_namespace: str = DEFAULT_GLOBAL_NAMESPACE
    outbound_port: int = DEFAULT_OUTBOUND_PORT
    opaque_ports: frozenset[int] = frozenset(DEFAULT_OPAQUE_PORTS)
    controller_name: str = DEFAULT_CONTROLLER_NAME
    # How long the listener waits for a client's first bytes to detect TLS/HTTP before
    # treating the connection as opaque (Linkerd's detect timeout is 10 s as well).
    detect_timeout_ms: int = DEFAULT_DETECT_TIMEOUT_MS
    # Addresses the outbound listener binds (the first is its address, the others are
    # additional addresses). iptables REDIRECT of local traffic lands on 127.0.0.1 / ::1.
    listener_addresses: tuple[str, ...] = DEFAULT_LISTENER_ADDRESSES

    @staticmethod
    def networks(values: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
        return _networks(values)


def creation_key(obj: TopLevel) -> tuple[int, datetime]:
    """Oldest first; a missing creationTimestamp counts as oldest (spec §2.3)."""
    ts = obj.metadata.creationTimestamp
    if ts is None:
        return (0, datetime.min.replace(tzinfo=UTC))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (1, ts)


def age_order(obj: TopLevel) -> tuple[tuple[int, datetime], str, str]:
    """Tie-break order used everywhere: oldest, then namespace, then name."""
    return (creation_key(obj), obj.metadata.namespace, obj.metadata.name)


ENKey = tuple[str, str]


def route_order(route: Route) -> tuple[str, str, str, str]:
    """The order of ``World.routes``."""
    return (route.kind, route.metadata.namespace, route.metadata.name, route.apiVersion)


def egress_parents(route: Route) -> tuple[ENKey, ...]:
    """The EgressNetworks a route names as parents, each once, in parentRef order."""
    keys: dict[ENKey, None] = {}
    for ref in route.spec.parentRefs:
        if ref.is_egress_network:
            keys[(ref.namespace or route.metadata.namespace, ref.name)] = None
    return tuple(keys)


def is_route(obj: TopLevel) -> TypeGuard[Route]:
    return isinstance(obj, HTTPRoute | GRPCRoute | TLSRoute | TCPRoute)


def _patch(table: dict[ENKey, Any], kind: type, removed: Sequence[TopLevel],
           added: Sequence[TopLevel]) -> tuple[dict[ENKey, Any], set[ENKey]]:
    """``table`` (sorted by key) with the objects of ``kind`` removed and added; the same dict
    when none of them is of that kind. A replaced object keeps its place. Also returns the
    keys whose object changed."""
    gone = {(o.metadata.namespace, o.metadata.name): o for o in removed if isinstance(o, kind)}
    new = {}
    for obj in added:
        if isinstance(obj, kind):
            key = (obj.metadata.namespace, obj.metadata.name)
            if key in new:
                raise IncrementalUpdateUnsupported(f"two {obj.kind}s {key[0]}/{key[1]}")
            new[key] = obj
    if not gone and not new:
        return table, set()
    out = dict(table)
    for key, obj in gone.items():
        if out.get(key) is not obj:
            raise IncrementalUpdateUnsupported(f"{obj.kind} {key[0]}/{key[1]} is not in the world")
        if key not in new:
            del out[key]
    inserted = False
    for key, obj in new.items():
        if key in out and key not in gone:
            raise IncrementalUpdateUnsupported(f"two {obj.kind}s {key[0]}/{key[1]}")
        inserted = inserted or key not in gone
        out[key] = obj
    if inserted:
        out = dict(sorted(out.items()))
    return out, set(gone) | set(new)


class IncrementalUpdateUnsupported(Exception):
    """The change cannot be applied in place (e.g. two objects with one key): build afresh."""


@dataclass(frozen=True)
class World:
    options: TranslatorOptions
    egress_networks: dict[ENKey, EgressNetwork]
    routes: tuple[Route, ...]
    services: dict[ENKey, Service]
    # namespace -> its EgressNetworks, sorted by name
    egress_by_namespace: dict[str, tuple[EgressNetwork, ...]]
    # EgressNetwork key -> the routes naming it as a parent (in ``routes`` order); keys of
    # missing EgressNetworks too, so their routes get a status.
    routes_by_parent: dict[ENKey, tuple[Route, ...]] = field(default_factory=dict)
    # namespace -> how many EgressNetworks, routes and Services it holds
    population: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, objects: Iterable[TopLevel], options: TranslatorOptions) -> World:
        egress: dict[ENKey, EgressNetwork] = {}
        routes: list[Route] = []
        services: dict[ENKey, Service] = {}
        for obj in objects:
            key = (obj.metadata.namespace, obj.metadata.name)
            if isinstance(obj, EgressNetwork):
                egress.setdefault(key, obj)
            elif is_route(obj):
                routes.append(obj)
            elif isinstance(obj, Service):
                services.setdefault(key, obj)
        by_ns: dict[str, list[EgressNetwork]] = {}
        for (ns, _name), en in sorted(egress.items()):
            by_ns.setdefault(ns, []).append(en)
        routes.sort(key=route_order)
        population: dict[str, int] = {}
        for table in (egress, services):
            for ns, _name in table:
                population[ns] = population.get(ns, 0) + 1
        for route in routes:
            ns = route.metadata.namespace
            population[ns] = population.get(ns, 0) + 1
        by_parent: dict[ENKey, list[Route]] = {}
        for route in routes:
            for parent in egress_parents(route):
                by_parent.setdefault(parent, []).append(route)
        return cls(
            options=options,
            egress_networks=dict(sorted(egress.items())),
            routes=tuple(routes),
            services=dict(sorted(services.items())),
            egress_by_namespace={ns: tuple(ens) for ns, ens in by_ns.items()},
            routes_by_parent={key: tuple(rs) for key, rs in sorted(by_parent.items())},
            population=population,
        )

    def updated(self, added: Sequence[TopLevel], removed: Sequence[TopLevel]) -> World:
        """This world with ``removed`` taken out and ``added`` put in (a changed object is
        one of each). Equal to ``World.build`` of the resulting object set; entries the change
        does not touch are shared with this world. Raises ``IncrementalUpdateUnsupported``
        when the result would hold two objects with one key (``build`` keeps the first)."""
        removed_routes = [o for o in removed if is_route(o)]
        added_routes = [o for o in added if is_route(o)]
        egress, egress_keys = _patch(self.egress_networks, EgressNetwork, removed, added)
        services, _ = _patch(self.services, Service, removed, added)
        routes = self.routes
        touched_ns = {ns for ns, _ in egress_keys}
        touched_parents: set[ENKey] = set(egress_keys)

        if removed_routes or added_routes:
            listed = list(routes)
            for route in removed_routes:
                at = bisect.bisect_left(listed, route_order(route), key=route_order)
                while at < len(listed) and listed[at] is not route and route_order(listed[at]) == route_order(route):
                    at += 1
                if at >= len(listed) or listed[at] is not route:
                    raise IncrementalUpdateUnsupported(f"route {route_order(route)} is not in the world")
                del listed[at]
                touched_parents.update(egress_parents(route))
            for route in added_routes:
                at = bisect.bisect_left(listed, route_order(route), key=route_order)
                if at < len(listed) and route_order(listed[at]) == route_order(route):
                    raise IncrementalUpdateUnsupported(f"two routes {route_order(route)}")
                listed.insert(at, route)
                touched_parents.update(egress_parents(route))
            routes = tuple(listed)

        by_ns = self.egress_by_namespace
        if touched_ns:
            by_ns = dict(by_ns)
            for ns in touched_ns:
                local = tuple(en for (n, _), en in egress.items() if n == ns)
                if local:
                    by_ns[ns] = local
                else:
                    by_ns.pop(ns, None)
        by_parent = self.routes_by_parent
        if removed_routes or added_routes:
            by_parent = dict(by_parent)
            changed_routes = {id(r) for r in removed_routes} | {id(r) for r in added_routes}
            new_parent = False
            for parent in touched_parents:
                previous = by_parent.get(parent, ())
                new_parent = new_parent or parent not in by_parent
                kept = [r for r in previous if id(r) not in changed_routes]
                kept += [r for r in added_routes if parent in egress_parents(r)]
                if kept:
                    kept.sort(key=route_order)
                    by_parent[parent] = tuple(kept)
                else:
                    by_parent.pop(parent, None)
            if new_parent:
                by_parent = dict(sorted(by_parent.items()))
        population = dict(self.population)
        for obj in removed:
            if isinstance(obj, EgressNetwork | Service) or is_route(obj):
                ns = obj.metadata.namespace
                population[ns] -= 1
                if not population[ns]:
                    del population[ns]
        for obj in added:
            if isinstance(obj, EgressNetwork | Service) or is_route(obj):
                ns = obj.metadata.namespace
                population[ns] = population.get(ns, 0) + 1
        return World(options=self.options, egress_networks=egress, routes=routes, services=services,
                     egress_by_namespace=by_ns, routes_by_parent=by_parent, population=population)

    def candidates(self, namespace: str) -> tuple[EgressNetwork, ...]:
        """EgressNetworks that may govern a client in ``namespace`` (spec §2.1)."""
        local = self.egress_by_namespace.get(namespace)
        if local:
            return local
        return self.egress_by_namespace.get(self.options.global_namespace, ())

    def opaque_ports(self, en: EgressNetwork) -> frozenset[int]:
        """The annotation's list when present (it replaces the default list), else the default."""
        annotated = en.opaque_ports
        return self.options.opaque_ports if annotated is None else annotated

    def namespaces(self) -> list[str]:
        """Namespaces that hold objects, plus the global egress namespace."""
        return list(self._namespaces)

    @cached_property
    def _namespaces(self) -> tuple[str, ...]:
        return tuple(sorted(self.population.keys() | {self.options.global_namespace}))
