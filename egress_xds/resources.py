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


def message_to_dict(message: Message) -> dict[str, Any]:
    """Envoy's JSON form of one message (proto field names, ``@type`` on Any)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def dump(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """{"clusters": [...], "listeners": [...], "routes": [...]} sorted by name, in push order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for type_url in PUSH_ORDER:
        by_name = resources.get(type_url)
        if by_name:
            out[SHORT_NAMES[type_url]] = [message_to_dict(by_name[name]) for name in sorted(by_name)]
    return out
