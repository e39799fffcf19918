"""Clusters: the passthrough (ORIGINAL_DST), the deny and invalid-backend sinks, and one
STATIC cluster per Service backend.

In: ``ir.NamespaceEgress``. Out: ``Cluster`` messages by name.
Called by ``egress_xds.envoy.build_resources``.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import duration_pb2

from egress_xds import ir
from egress_xds.envoy.common import pack

CONNECT_TIMEOUT = duration_pb2.Duration(seconds=10)
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _same_protocol_upstream() -> dict[str, object]:
    """HTTP/1 requests go upstream as HTTP/1, h2c and gRPC as HTTP/2."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        use_downstream_protocol_config={"http_protocol_options": {}, "http2_protocol_options": {}}
    )
    return {HTTP_OPTIONS_KEY: pack(options)}


def passthrough_cluster() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=ir.PASSTHROUGH_CLUSTER,
        type=cluster_pb2.Cluster.ORIGINAL_DST,
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        connect_timeout=CONNECT_TIMEOUT,
        typed_extension_protocol_options=_same_protocol_upstream(),
    )


def sink_cluster(name: str) -> cluster_pb2.Cluster:
    """A cluster with no endpoints: a tcp_proxy to it accepts, then closes without dialling;
    an HTTP route to it gets 503 UH, mapped to 500 for invalid backends."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=CONNECT_TIMEOUT,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name),
    )


def service_cluster(backend: ir.Backend) -> cluster_pb2.Cluster:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": backend.address, "port_value": backend.port}}}}
    return cluster_pb2.Cluster(
        name=backend.cluster,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=CONNECT_TIMEOUT,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=backend.cluster, endpoints=[{"lb_endpoints": [endpoint]}]
        ),
        typed_extension_protocol_options=_same_protocol_upstream(),
    )


def build_clusters(egress: ir.NamespaceEgress) -> dict[str, cluster_pb2.Cluster]:
    clusters = [
        passthrough_cluster(),
        sink_cluster(ir.DENY_CLUSTER),
        sink_cluster(ir.INVALID_BACKEND_CLUSTER),
        *(service_cluster(b) for b in egress.services),
    ]
    return {c.name: c for c in sorted(clusters, key=lambda c: c.name)}
