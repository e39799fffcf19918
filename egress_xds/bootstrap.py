"""Envoy sidecar bootstrap rendering (``egress-xds bootstrap``).

In: the sidecar's namespace, node id, ADS address (``host:port`` or ``unix:PATH``), admin
address, outbound port. Out: a YAML bootstrap from the template ``envoy/bootstrap.yaml``:
ADS over gRPC/HTTP2 with keepalive (a ``unix:`` address becomes a ``pipe``), the namespace in
``node.metadata``, admin on loopback, an admin access log, and stats tags that turn the
egress stat prefixes into Prometheus labels. With ``tls_ca`` the ADS connection uses TLS
(an ``UpstreamTlsContext`` verifying the server against that CA and its name), and with
``tls_cert``/``tls_key`` also presents a client certificate (mTLS). Envoy reads those files;
read once from the bootstrap, rotated files would need an Envoy restart. With ``sds_dir`` the
bootstrap instead names two file-based SDS secrets that :func:`generate` writes into that
directory (``egress-xds-client-cert.json``, ``egress-xds-ca.json``: xDS DiscoveryResponses
holding a ``tls.v3.Secret`` that points at the PEM files). Envoy watches the directories of
the PEM files and reloads them when a file is renamed into place (a Kubernetes secret
volume's ``..data`` swap, ``mv``): new connections to serve use
the new certificate and CA, the open one is kept. Called by ``serve.cmd_bootstrap``
(:func:`generate`) and by tests (:func:`render`, :func:`sds_secrets`).
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import os
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _installed_file(name: str) -> Path:
    """A file of ``envoy/``: in the checkout (``envoy/`` beside the package: a clone, an
    editable install), else where a wheel put it (``<prefix>/share/egress-xds/``, found
    through the installed distribution's file list, whatever the install scheme)."""
    beside = Path(__file__).resolve().parent.parent / "envoy" / name
    if beside.is_file():
        return beside
    try:
        distribution = importlib.metadata.distribution("egress-xds")
    except importlib.metadata.PackageNotFoundError:
        return beside
    for file in distribution.files or ():
        if file.name == name and file.parent.name == "egress-xds" and file.parent.parent.name == "share":
            return Path(str(distribution.locate_file(file))).resolve()
    return beside


TEMPLATE = _installed_file("bootstrap.yaml")

DEFAULT_ADS = "127.0.0.1:18000"
DEFAULT_ADMIN = "127.0.0.1:15000"
DEFAULT_OUTBOUND_PORT = 15001
# The file-based SDS secrets of the ADS connection (``--sds-dir``): secret name = file stem.
SDS_CLIENT_CERT = "egress-xds-client-cert"
SDS_CA = "egress-xds-ca"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


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
    tls_ca: str = ""  # PEM file: the CA that signed serve's certificate; enables TLS
    tls_cert: str = ""  # PEM files: the sidecar's client certificate and key (mTLS)
    tls_key: str = ""
    tls_server_name: str = ""  # SNI and the DNS name the server certificate must carry
    sds_dir: str = ""  # where the SDS secret files go: Envoy then reloads rotated TLS files


def tls_transport_socket(options: BootstrapOptions, ads: dict[str, Any]) -> dict[str, Any] | None:
    """The ADS cluster's ``transport_socket`` (an UpstreamTlsContext), or None for plaintext.

    The server certificate must chain to ``tls_ca`` and carry the server name: the
    ``--tls-server-name``, else the ADS host (a DNS SAN for a name, an IP SAN for an IP);
    a unix socket without ``--tls-server-name`` is checked against the CA only.
    With ``sds_dir`` the CA and the client certificate come from file-based SDS secrets (see
    :func:`sds_secrets`); the server name check stays in the bootstrap.
    """
    if not options.tls_ca:
        if options.tls_cert or options.tls_key or options.tls_server_name or options.sds_dir:
            raise ValueError("--tls-cert, --tls-key, --tls-server-name and --sds-dir need --tls-ca")
        return None
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    for path in (options.tls_ca, options.tls_cert, options.tls_key, options.sds_dir):
        if path and not Path(path).is_absolute():
            raise ValueError(f"{path!r}: TLS file paths must be absolute (Envoy reads them)")
    host = ads.get("socket_address", {}).get("address", "")
    name = options.tls_server_name or (host if host and not _is_ip(host) else "")
    san: dict[str, Any] = {}
    if name:
        san["match_typed_subject_alt_names"] = [{"san_type": "DNS", "matcher": {"exact": name}}]
    elif host:
        san["match_typed_subject_alt_names"] = [{"san_type": "IP_ADDRESS", "matcher": {"exact": host}}]
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
    }
    if options.sds_dir:
        common["combined_validation_context"] = {
            "default_validation_context": san,
            "validation_context_sds_secret_config": _sds_config(options.sds_dir, SDS_CA)}
        if options.tls_cert:
            common["tls_certificate_sds_secret_configs"] = [_sds_config(options.sds_dir, SDS_CLIENT_CERT)]
    else:
        common["validation_context"] = {"trusted_ca": {"filename": options.tls_ca}, **san}
        if options.tls_cert:
            common["tls_certificates"] = [{"certificate_chain": {"filename": options.tls_cert},
                                           "private_key": {"filename": options.tls_key}}]
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if name:
        context["sni"] = name
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _sds_config(sds_dir: str, secret: str) -> dict[str, Any]:
    """An ``SdsSecretConfig`` read from ``sds_dir/<secret>.json``, reloaded when a file is
    renamed into ``sds_dir`` (so rewriting the secret files with :func:`generate` applies too)."""
    return {"name": secret, "sds_config": {
        "path_config_source": {"path": str(Path(sds_dir) / f"{secret}.json"),
                               "watched_directory": {"path": sds_dir}},
        "resource_api_version": "V3"}}


def sds_secrets(options: BootstrapOptions) -> dict[str, dict[str, Any]]:
    """The SDS files for ``sds_dir``: file name -> DiscoveryResponse (as a dict) with one Secret.

    Each secret names the PEM files and the directory Envoy watches for them: the files'
    directory, where a Kubernetes secret volume renames its ``..data`` symlink. On a rename
    there Envoy rereads the files (the certificate and key together) and uses them for new
    connections; a set it cannot load is rejected and the previous one kept.
    """
    if not (options.sds_dir and options.tls_ca):
        return {}
    ca_dir = str(Path(options.tls_ca).parent)
    out = {f"{SDS_CA}.json": {"resources": [{
        "@type": SECRET_TYPE, "name": SDS_CA,
        "validation_context": {"trusted_ca": {"filename": options.tls_ca}, "watched_directory": {"path": ca_dir}},
    }]}}
    if options.tls_cert:
        certificate: dict[str, Any] = {"certificate_chain": {"filename": options.tls_cert},
                                       "private_key": {"filename": options.tls_key}}
        cert_dir, key_dir = Path(options.tls_cert).parent, Path(options.tls_key).parent
        if cert_dir == key_dir:  # else Envoy watches both directories itself
            certificate["watched_directory"] = {"path": str(cert_dir)}
        out[f"{SDS_CLIENT_CERT}.json"] = {"resources": [{
            "@type": SECRET_TYPE, "name": SDS_CLIENT_CERT, "tls_certificate": certificate}]}
    return out


def generate(options: BootstrapOptions, template: Path = TEMPLATE) -> str:
    """``egress-xds bootstrap``: the bootstrap text, after writing the SDS files into
    ``sds_dir`` (created if missing; each file written whole and renamed into place).
    Raises ValueError for bad options or a directory that cannot be written."""
    text = render(options, template)
    secrets = sds_secrets(options)
    try:
        if secrets:
            os.makedirs(options.sds_dir, exist_ok=True)
        for name, content in secrets.items():
            path = Path(options.sds_dir) / name
            partial = path.with_name(f".{name}.tmp")
            partial.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            partial.chmod(0o644)  # read by the proxy uid
            os.replace(partial, path)
    except OSError as err:
        raise ValueError(f"--sds-dir {options.sds_dir}: {err.strerror or err}") from None
    return text


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
    transport_socket = tls_transport_socket(options, ads)
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
        "ads_transport_socket": transport_socket,
    }
    try:
        source = template.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"the bootstrap template {template} is missing (envoy/bootstrap.yaml of the checkout, "
                         "or share/egress-xds/bootstrap.yaml of an installed egress-xds)") from None
    if transport_socket is None:  # plaintext: the line is left out, not set to null
        source = "".join(line for line in source.splitlines(keepends=True)
                         if "${ads_transport_socket}" not in line)
    text = string.Template(source)
    return text.substitute({k: json.dumps(v, sort_keys=True) for k, v in values.items()})
