"""The world the resolver reads: validated objects indexed by kind and namespace, plus options.

In: the valid objects of ``model`` and ``TranslatorOptions`` (from CLI flags).
Out: ``World``, an immutable index the rest of ``resolve`` queries.
Called by ``egress_xds.translate`` whenever the set of objects changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

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


@dataclass(frozen=True)
class World:
    options: TranslatorOptions
    egress_networks: dict[tuple[str, str], EgressNetwork]
    routes: tuple[Route, ...]
    services: dict[tuple[str, str], Service]
    # namespace -> its EgressNetworks, sorted by name
    egress_by_namespace: dict[str, tuple[EgressNetwork, ...]]

    @classmethod
    def build(cls, objects: Iterable[TopLevel], options: TranslatorOptions) -> World:
        egress: dict[tuple[str, str], EgressNetwork] = {}
        routes: list[Route] = []
        services: dict[tuple[str, str], Service] = {}
        for obj in objects:
            key = (obj.metadata.namespace, obj.metadata.name)
            if isinstance(obj, EgressNetwork):
                egress.setdefault(key, obj)
            elif isinstance(obj, HTTPRoute | GRPCRoute | TLSRoute | TCPRoute):
                routes.append(obj)
            elif isinstance(obj, Service):
                services.setdefault(key, obj)
        by_ns: dict[str, list[EgressNetwork]] = {}
        for (ns, _name), en in sorted(egress.items()):
            by_ns.setdefault(ns, []).append(en)
        routes.sort(key=lambda r: (r.kind, r.metadata.namespace, r.metadata.name, r.apiVersion))
        return cls(
            options=options,
            egress_networks=dict(sorted(egress.items())),
            routes=tuple(routes),
            services=dict(sorted(services.items())),
            egress_by_namespace={ns: tuple(ens) for ns, ens in by_ns.items()},
        )

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
        names = {ns for ns, _ in self.egress_networks} | {r.metadata.namespace for r in self.routes}
        names |= {ns for ns, _ in self.services}
        names.add(self.options.global_namespace)
        return sorted(names)
