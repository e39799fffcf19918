"""Envoy resource sets as plain values, and the one ``dump`` that renders them.

In: ``Resources`` = {type URL: {resource name: protobuf message}} built by ``egress_xds.envoy``.
Out: Envoy's own JSON form (``dump``), used alike by ``egress-xds translate``, the golden
files and the debug endpoint. Shared leaf module: both the translators and the server import
it, and it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Push order of rule 8 (xds-server.md): clusters, endpoints, listeners, routes.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

SHORT_NAMES = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}

Resources = Mapping[str, Mapping[str, Message]]


# Fields of type Struct or map, whose keys protobuf keeps in no particular order.
_UNORDERED = frozenset({"json_format", "typed_extension_protocol_options", "filter_metadata"})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):  # includes the OrderedDicts json_format uses for Any
        return {k: (_sorted(v) if k in _UNORDERED else _plain(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value)}
    return _plain(value)


def message_to_dict(message: Message) -> dict[str, Any]:
    """Envoy's JSON form of one message (proto field names, ``@type`` on Any), as plain
    dicts and lists so that YAML and JSON render it alike."""
    result: dict[str, Any] = _plain(json_format.MessageToDict(message, preserving_proto_field_name=True))
    return result


def dump(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """{"clusters": [...], "listeners": [...], "routes": [...]} sorted by name, in push order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for type_url in PUSH_ORDER:
        by_name = resources.get(type_url)
        if by_name:
            out[SHORT_NAMES[type_url]] = [message_to_dict(by_name[name]) for name in sorted(by_name)]
    return out
