"""Envoy sidecar bootstrap rendering (``egress-xds bootstrap``).

In: the sidecar's namespace, node id, ADS address (``host:port`` or ``unix:PATH``), admin
address, outbound port. Out: a YAML bootstrap from the template ``envoy/bootstrap.yaml``:
ADS over gRPC/HTTP2 with keepalive (a ``unix:`` address becomes a ``pipe``), the namespace in
``node.metadata``, admin on loopback, an admin access log, and stats tags that turn the
egress stat prefixes into Prometheus labels. Called by ``serve.cmd_bootstrap`` and by tests.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent.parent / "envoy" / "bootstrap.yaml"

DEFAULT_ADS = "127.0.0.1:18000"
DEFAULT_ADMIN = "127.0.0.1:15000"
DEFAULT_OUTBOUND_PORT = 15001


def default_node_id(namespace: str) -> str:
    return f"sidecar~{socket.gethostname()}.{namespace}"


def parse_address(value: str) -> dict[str, Any]:
    """``host:port``, ``[v6]:port`` or ``unix:PATH`` -> an Envoy ``Address`` (as a dict)."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:").removeprefix("//")
        if not path:
            raise ValueError(f"{value!r}: unix: needs a path")
        return {"pipe": {"path": path}}
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{value!r} is not host:port or unix:PATH")
    host = host.removeprefix("[").removesuffix("]")
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError(f"{value!r}: port out of range")
    return {"socket_address": {"address": host, "port_value": port_number}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class BootstrapOptions:
    namespace: str
    node_id: str | None = None
    node_cluster: str = "egress-sidecar"
    ads: str = DEFAULT_ADS
    admin: str = DEFAULT_ADMIN
    outbound_port: int = DEFAULT_OUTBOUND_PORT
    delta: bool = False
    access_log_path: str = "/dev/stdout"


def render(options: BootstrapOptions, template: Path = TEMPLATE) -> str:
    """The bootstrap as YAML text."""
    if not options.namespace:
        raise ValueError("a namespace is required")
    ads = parse_address(options.ads)
    admin = parse_address(options.admin)
    if "socket_address" in admin and not _is_ip(admin["socket_address"]["address"]):
        raise ValueError(f"admin address {options.admin!r} must be an IP address")
    if "socket_address" in ads:
        cluster_type = "STATIC" if _is_ip(ads["socket_address"]["address"]) else "STRICT_DNS"
    else:
        cluster_type = "STATIC"
    values = {
        "node_id": options.node_id or default_node_id(options.namespace),
        "node_cluster": options.node_cluster,
        "namespace": options.namespace,
        "outbound_port": options.outbound_port,
        "admin_address": admin,
        "access_log_path": options.access_log_path,
        "ads_api_type": "DELTA_GRPC" if options.delta else "GRPC",
        "ads_cluster_type": cluster_type,
        "ads_address": ads,
    }
    text = string.Template(template.read_text(encoding="utf-8"))
    return text.substitute({k: json.dumps(v, sort_keys=True) for k, v in values.items()})
