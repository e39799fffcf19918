"""Small shared pieces of the Envoy builders: Any packing, stat names, access logs, and the
wire-format helpers (``varint``, ``field_bytes``) the listener is assembled with.

In: IR values. Out: protobuf messages, or their serialized parts. Called by
``envoy.listener``, ``envoy.route`` and ``envoy.cluster`` only.
"""

from __future__ import annotations

import functools

from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from egress_xds import ir


def pack(message: Message) -> any_pb2.Any:
    """Any with deterministic bytes: map fields (the access log's JSON format) are sorted,
    so equal configs serialize identically and hash to the same version."""
    return any_pb2.Any(type_url=type_url(type(message)), value=message.SerializeToString(deterministic=True))


def type_url(message_type: type[Message]) -> str:
    return f"type.googleapis.com/{message_type.DESCRIPTOR.full_name}"


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(n) for n in range(1 << 14)]  # every length of a chain part


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint (lengths and tags on the wire)."""
    return _SMALL_VARINTS[value] if value < 16384 else _encode_varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited field (a message, string or bytes) as written on the wire: tag,
    length, payload. A message's deterministic bytes are its fields' bytes in number order
    (repeated fields in list order), which is what lets ``envoy.listener`` assemble chains
    from cached parts; ``tests/unit/test_envoy_parts.py`` checks the result against upb."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


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


# The client namespace is the same for every chain of a namespace's listener: the listener
# carries it as metadata (``listener._metadata_field``) and the access log reads it, so
# a chain's bytes do not depend on the namespace and namespaces on the same EgressNetwork,
# port and routes share them.
NAMESPACE_METADATA_FILTER = "egress_xds"
NAMESPACE_METADATA_KEY = "namespace"
_ACCESS_LOG_FIELDS: dict[str, str] = {
    "time": "%START_TIME%",
    "namespace": f"%METADATA(LISTENER:{NAMESPACE_METADATA_FILTER}:{NAMESPACE_METADATA_KEY})%",
    "egress_network": "",
    "protocol": "",
    "destination": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "port": "%DOWNSTREAM_LOCAL_PORT%",
    "route": "%ROUTE_NAME%",
    "sni": "%REQUESTED_SERVER_NAME%",
    "upstream": "%UPSTREAM_HOST%",
    "flags": "%RESPONSE_FLAGS%",
    "bytes_sent": "%BYTES_SENT%",
    "bytes_received": "%BYTES_RECEIVED%",
    "duration_ms": "%DURATION%",
}
_HTTP_ACCESS_LOG_FIELDS: dict[str, str] = {
    "host": "%REQ(:AUTHORITY)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
}


_LOGGER_URL = type_url(stream_pb2.StdoutAccessLog)
_LOGGER_NAME = "envoy.access_loggers.stdout"


def _json_field(key: str, value: str) -> bytes:
    """One entry of a Struct's ``fields`` map (key = 1, value = 2) holding a string Value
    (string_value = 3)."""
    return field_bytes(1, field_bytes(1, key.encode()) + field_bytes(2, field_bytes(3, value.encode())))


_PER_CHAIN = ("egress_network", "route")  # in key order


@functools.lru_cache(maxsize=4)
def _access_log_fields(protocol: str) -> tuple[bytes, ...]:
    """The JSON format's map entries in key order (deterministic serialization sorts map
    keys) as bytes: the constant runs between the per-chain entries (``_PER_CHAIN``)."""
    fields = _ACCESS_LOG_FIELDS | {"protocol": protocol}
    if protocol == "http":
        fields |= _HTTP_ACCESS_LOG_FIELDS
    runs: list[bytes] = [b""]
    for key in sorted(fields):
        if key in _PER_CHAIN:
            runs.append(b"")
        else:
            runs[-1] += _json_field(key, fields[key])
    assert len(runs) == len(_PER_CHAIN) + 1
    return tuple(runs)


_LOGGER_PREFIX = field_bytes(1, _LOGGER_NAME.encode()) + varint(4 << 3 | 2)  # AccessLog: name, then typed_config
_LOGGER_URL_FIELD = field_bytes(1, _LOGGER_URL.encode())


def access_log_bytes(egress_network: str, route: str | None, protocol: str) -> bytes:
    """One JSON line per connection (TCP) or request (HTTP) on stdout, naming the client
    namespace (from the listener's metadata), the EgressNetwork, the port and the route
    (spec §6): an ``AccessLog``'s bytes. Assembled from cached entries (``field_bytes``): a
    big world has thousands of these, and filling a Struct message walks it in Python. The
    listener caches the result per (EgressNetwork, route, protocol)."""
    a, b, c = _access_log_fields(protocol)
    struct = b"".join((a, _json_field("egress_network", egress_network), b,
                       _json_field("route", route if route is not None else "%ROUTE_NAME%"), c))
    logger = field_bytes(1, field_bytes(2, struct))  # StdoutAccessLog.log_format.json_format
    typed_config = _LOGGER_URL_FIELD + field_bytes(2, logger)
    return _LOGGER_PREFIX + varint(len(typed_config)) + typed_config
