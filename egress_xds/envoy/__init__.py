"""IR -> Envoy resources, one module per Envoy type (listener, route, cluster).

In: ``ir.NamespaceEgress``. Out: ``Resources`` ({type URL: {name: message}}), deterministic:
the same IR always gives byte-identical messages. Pure: no I/O, no clock.
Called by ``egress_xds.translate``.
"""

from __future__ import annotations

from google.protobuf.message import Message

from egress_xds import ir
from egress_xds.envoy.cluster import build_clusters
from egress_xds.envoy.listener import build_listener
from egress_xds.envoy.route import build_route_config
from egress_xds.resources import CLUSTER, LISTENER, ROUTE


def build_resources(egress: ir.NamespaceEgress) -> dict[str, dict[str, Message]]:
    listener = build_listener(egress)
    routes = [build_route_config(p) for p in egress.policies if p.protocol in ("http", "grpc")]
    return {
        CLUSTER: dict(build_clusters(egress)),
        LISTENER: {listener.name: listener},
        ROUTE: {r.name: r for r in sorted(routes, key=lambda r: r.name)},
    }


__all__ = ["build_resources"]
