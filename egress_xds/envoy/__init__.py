"""IR -> Envoy resources, one module per Envoy type (listener, route, cluster).

In: ``ir.NamespaceEgress``. Out: ``Resources`` ({type URL: {name: message}}), deterministic:
the same IR always gives byte-identical messages. Pure: no I/O, no clock.
Called by ``egress_xds.translate``. Messages are shared between calls (memoized): callers
must not change them.
"""

from __future__ import annotations

from google.protobuf.message import Message

from egress_xds import ir
from egress_xds.envoy.cluster import build_clusters
from egress_xds.envoy.listener import build_listener
from egress_xds.envoy.route import build_route_config, route_config_name
from egress_xds.resources import CLUSTER, LISTENER, ROUTE

# id(policy) -> (policy, its route configuration). Namespaces that share a policy object
# (``resolve.namespace.SharedWork``: every namespace on the global view) share the message.
# The entry holds the policy, so its id is not reused while the entry lives.
RouteConfigs = dict[int, tuple[ir.PortPolicy, Message]]


def build_resources(egress: ir.NamespaceEgress, shared: RouteConfigs | None = None) -> dict[str, dict[str, Message]]:
    """The namespace's resources; ``shared`` (one per world, from the caller) lets
    namespaces with the same policy objects share route configurations."""
    listener = build_listener(egress)
    memo: RouteConfigs = {} if shared is None else shared
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


__all__ = ["RouteConfigs", "build_resources"]
