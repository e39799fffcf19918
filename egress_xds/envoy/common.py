"""Small shared pieces of the Envoy builders: Any packing, stat names, access logs.

In: IR values. Out: protobuf messages. Called by ``envoy.listener``, ``envoy.route`` and
``envoy.cluster`` only.
"""

from __future__ import annotations

import functools

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from egress_xds import ir


def pack(message: Message) -> any_pb2.Any:
    """Any with deterministic bytes: map fields (the access log's JSON format) are sorted,
    so equal configs serialize identically and hash to the same version."""
    return any_pb2.Any(
        type_url=f"type.googleapis.com/{message.DESCRIPTOR.full_name}",
        value=message.SerializeToString(deterministic=True),
    )


def stat_name(value: str) -> str:
    """Kubernetes names never contain ``_``, so ``.`` -> ``_`` keeps stat segments parseable."""
    return value.replace(".", "_")


def governor_stat(governor: ir.Governor) -> str:
    """``<ns>.<name>`` for an EgressNetwork, ``fallback`` or ``cluster`` otherwise."""
    if governor.kind == "egress-network":
        return f"{stat_name(governor.namespace)}.{stat_name(governor.name)}"
    return governor.kind


def route_stat(route: ir.RouteRef) -> str:
    return f"{route.kind}_{stat_name(route.namespace)}_{stat_name(route.name)}"


def hcm_stat_prefix(governor: ir.Governor, port_label: str) -> str:
    return f"egress.{governor_stat(governor)}.{port_label}"


def tcp_stat_prefix(governor: ir.Governor, port_label: str, route: ir.RouteRef | None) -> str:
    label = governor.default_route if route is None else route_stat(route)
    return f"egress.{governor_stat(governor)}.{port_label}.{label}"


@functools.lru_cache(maxsize=65536)
def access_log(namespace: str, egress_network: str, route: str | None, protocol: str) -> accesslog_pb2.AccessLog:
    """One JSON line per connection (TCP) or request (HTTP) on stdout, naming the client
    namespace, the EgressNetwork, the port and the route (spec §6). Memoized: the same few
    messages recur in every chain; callers copy them and never mutate the cached one."""
    fields: dict[str, str] = {
        "time": "%START_TIME%",
        "namespace": namespace,
        "egress_network": egress_network,
        "protocol": protocol,
        "destination": "%DOWNSTREAM_LOCAL_ADDRESS%",
        "port": "%DOWNSTREAM_LOCAL_PORT%",
        "route": route if route is not None else "%ROUTE_NAME%",
        "sni": "%REQUESTED_SERVER_NAME%",
        "upstream": "%UPSTREAM_HOST%",
        "flags": "%RESPONSE_FLAGS%",
        "bytes_sent": "%BYTES_SENT%",
        "bytes_received": "%BYTES_RECEIVED%",
        "duration_ms": "%DURATION%",
    }
    if protocol == "http":
        fields |= {
            "host": "%REQ(:AUTHORITY)%",
            "method": "%REQ(:METHOD)%",
            "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
            "status": "%RESPONSE_CODE%",
            "grpc_status": "%GRPC_STATUS_NUMBER%",
        }
    logger = stream_pb2.StdoutAccessLog(log_format={"json_format": fields})
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.stdout", typed_config=pack(logger))
