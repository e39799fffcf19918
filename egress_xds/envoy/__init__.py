"""IR -> Envoy resources, one module per Envoy type (listener, route, cluster).

In: ``ir.NamespaceEgress``. Out: ``Resources`` ({type URL: {name: message}}), deterministic:
the same IR always gives byte-identical messages. Pure: no I/O, no clock.
Called by ``egress_xds.translate``. Messages are shared between calls (memoized): callers
must not change them.
"""

from __future__ import annotations

from google.protobuf.message import Message

from egress_xds import ir
from egress_xds.envoy import common as _common
from egress_xds.envoy import listener as _listener
from egress_xds.envoy import route as _route
from egress_xds.envoy.cluster import build_clusters
from egress_xds.envoy.listener import SharedChains, build_listener
from egress_xds.envoy.route import build_route_config, route_config_name
from egress_xds.resources import CLUSTER, LISTENER, ROUTE


class SharedBuilds:
    """What the namespaces of one world share, keyed by the identity of their IR policies
    (``resolve.namespace.SharedWork`` gives every namespace on the same EgressNetwork, port
    and routes the same policy object): route configurations and listener chains.
    Each entry holds its policy, so the id is not reused while the entry lives. The caller
    keeps one per world."""

    def __init__(self) -> None:
        self.route_configs: dict[int, tuple[ir.PortPolicy, Message]] = {}
        self.chains: SharedChains = {}


def build_resources(egress: ir.NamespaceEgress, shared: SharedBuilds | None = None) -> dict[str, dict[str, Message]]:
    """The namespace's resources; ``shared`` (one per world, from the caller) lets
    namespaces with the same policy objects share their parts."""
    shared = shared or SharedBuilds()
    listener = build_listener(egress, shared.chains)
    memo = shared.route_configs
    routes: dict[str, Message] = {}
    for policy in egress.policies:
        if policy.protocol in ("http", "grpc"):
            name = route_config_name(policy)
            if name in routes:
                continue  # ports without routes share their governor's default table
            found = memo.get(id(policy))
            if found is None:
                found = memo[id(policy)] = (policy, build_route_config(policy, name))
            routes[name] = found[1]
    return {
        CLUSTER: dict(build_clusters(egress)),
        LISTENER: {listener.name: listener},
        ROUTE: dict(sorted(routes.items())),
    }


def forget_memoized() -> None:
    """Drop what the builders memoized (chains, filters, access logs, matches), so the next
    build starts cold, as at start-up. For benchmarks; ``serve`` never needs it (the memos
    are bounded and keyed by content)."""
    for module in (_common, _listener, _route):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()
    _listener.forget_matches()


__all__ = ["SharedBuilds", "build_resources", "forget_memoized"]
