"""Client side of the admin API for the CLI: ``explain --server`` and ``status --server``.

In: a server address (``host:port`` or ``unix:PATH``, as ``serve`` prints it) and a
question. Out: the same dicts the offline commands and the debug endpoint produce
(``egress_xds.admin.convert``), so the commands print identical output either way.
Blocking calls with a deadline; every gRPC failure becomes ``AdminError`` with the server's
message. Called by ``egress_xds.commands`` and ``egress_xds.serve``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from egress_xds.admin import convert
from egress_xds.admin.v1 import admin_pb2, admin_pb2_grpc

DEFAULT_TIMEOUT = 10.0


class AdminError(Exception):
    """A call to the admin API failed; the message names the server and says why."""


@dataclass(frozen=True)
class ClientTLS:
    """TLS towards a ``serve`` started with ``--tls-cert`` (and, for mTLS, ``--client-ca``):
    the CA that signed the server's certificate, optionally this client's certificate and
    key, and the name to check the server's certificate against (default: the address)."""

    ca: str
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def channel(self, server: str) -> grpc.Channel:
        try:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(self.ca).read_bytes(),
                private_key=Path(self.key).read_bytes() if self.key else None,
                certificate_chain=Path(self.cert).read_bytes() if self.cert else None)
        except OSError as err:
            raise AdminError(f"{server}: cannot read TLS files: {err}") from None
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(server, creds, options=options)


def _call(server: str, method: str, request: Any, timeout: float, tls: ClientTLS | None = None) -> Any:
    try:
        with (tls.channel(server) if tls else grpc.insecure_channel(server)) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            return getattr(stub, method)(request, timeout=timeout)
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        name = code.name if code is not None else "ERROR"
        raise AdminError(f"{server}: {method}: {name}: {details}") from None


def explain_request(namespace: str, ip: str, port: int, *, sni: str | None = None,
                    host: str | None = None, path: str | None = None, method: str | None = None,
                    headers: dict[str, str] | None = None) -> admin_pb2.ExplainRequest:
    """The request for the connection ``egress-xds explain`` would describe with the same
    arguments: ``sni`` is TLS, any of host/path/method is HTTP, neither is opaque TCP."""
    request = admin_pb2.ExplainRequest(namespace=namespace, ip=ip, port=port)
    if sni is not None:
        request.tls.sni = sni
    elif host is not None or path is not None or method is not None or headers:
        http = request.http
        http.SetInParent()
        if host is not None:
            http.host = host
        if path is not None:
            http.path = path
        if method is not None:
            http.method = method
        http.headers.update(headers or {})
    return request


def explain(server: str, namespace: str, ip: str, port: int, *, sni: str | None = None,
            host: str | None = None, path: str | None = None, method: str | None = None,
            timeout: float = DEFAULT_TIMEOUT, tls: ClientTLS | None = None) -> dict[str, Any]:
    request = explain_request(namespace, ip, port, sni=sni, host=host, path=path, method=method)
    return convert.verdict_to_dict(_call(server, "Explain", request, timeout, tls))


def list_proxies(server: str, namespace: str = "", timeout: float = DEFAULT_TIMEOUT,
                 tls: ClientTLS | None = None) -> list[dict[str, Any]]:
    response = _call(server, "ListProxies", admin_pb2.ListProxiesRequest(namespace=namespace), timeout, tls)
    return [convert.proxy_to_dict(p) for p in response.proxies]


def status(server: str, timeout: float = DEFAULT_TIMEOUT, tls: ClientTLS | None = None) -> dict[str, Any]:
    return convert.status_to_dict(_call(server, "GetStatus", admin_pb2.GetStatusRequest(), timeout, tls))


def add_tls_arguments(parser: Any) -> None:
    """``--tls-ca/--tls-cert/--tls-key/--tls-server-name`` for ``--server`` over TLS."""
    group = parser.add_argument_group("TLS to --server (when serve runs with --tls-cert)")
    group.add_argument("--tls-ca", metavar="FILE", help="CA certificate that signed the server's certificate")
    group.add_argument("--tls-cert", metavar="FILE", help="this client's certificate (mTLS)")
    group.add_argument("--tls-key", metavar="FILE", help="this client's private key (mTLS)")
    group.add_argument("--tls-server-name", metavar="NAME", help="name to verify the server's certificate against")


def tls_from_args(args: Any) -> ClientTLS | None:
    if not args.tls_ca:
        if args.tls_cert or args.tls_key or args.tls_server_name:
            raise AdminError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise AdminError("--tls-cert and --tls-key go together")
    return ClientTLS(args.tls_ca, args.tls_cert or "", args.tls_key or "", args.tls_server_name or "")
