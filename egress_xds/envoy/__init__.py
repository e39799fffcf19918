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

# id(policy) -> (policy, its route configuration): namespaces that share a policy object
# (``resolve.namespace.SharedWork``: every namespace on the global view) share the message.
# The entry holds the policy, so its id is not reused while the entry lives.
_ROUTE_CONFIGS: dict[int, tuple[ir.PortPolicy, Message]] = {}
_ROUTE_CONFIGS_MAX = 50_000


def _route_config(policy: ir.PortPolicy, name: str) -> Message:
    found = _ROUTE_CONFIGS.get(id(policy))
    if found is None:
        if len(_ROUTE_CONFIGS) >= _ROUTE_CONFIGS_MAX:
            _ROUTE_CONFIGS.clear()
        found = _ROUTE_CONFIGS[id(policy)] = (policy, build_route_config(policy, name))
    return found[1]


def build_resources(egress: ir.NamespaceEgress) -> dict[str, dict[str, Message]]:
    listener = build_listener(egress)
    routes: dict[str, Message] = {}
    for policy in egress.policies:
        if policy.protocol in ("http", "grpc"):
            name = route_config_name(policy)
            if name not in routes:  # ports without routes share their governor's default table
                routes[name] = _route_config(policy, name)
    return {
        CLUSTER: dict(build_clusters(egress)),
        LISTENER: {listener.name: listener},
        ROUTE: dict(sorted(routes.items())),
    }


__all__ = ["build_resources"]
