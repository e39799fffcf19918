"""Client side of the admin API for the CLI: ``explain --server`` and ``status --server``.

In: a server address (``host:port`` or ``unix:PATH``, as ``serve`` prints it) and a
question. Out: the same dicts the offline commands and the debug endpoint produce
(``egress_xds.admin.convert``), so the commands print identical output either way.
Blocking calls with a deadline; every gRPC failure becomes ``AdminError`` with the server's
message. Called by ``egress_xds.commands`` and ``egress_xds.serve``.
"""

from __future__ import annotations

from typing import Any

import grpc

from egress_xds.admin import convert
from egress_xds.admin.v1 import admin_pb2, admin_pb2_grpc

DEFAULT_TIMEOUT = 10.0


class AdminError(Exception):
    """A call to the admin API failed; the message names the server and says why."""


def _call(server: str, method: str, request: Any, timeout: float) -> Any:
    try:
        with grpc.insecure_channel(server) as channel:
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
            timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    request = explain_request(namespace, ip, port, sni=sni, host=host, path=path, method=method)
    return convert.verdict_to_dict(_call(server, "Explain", request, timeout))


def list_proxies(server: str, namespace: str = "", timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    response = _call(server, "ListProxies", admin_pb2.ListProxiesRequest(namespace=namespace), timeout)
    return [convert.proxy_to_dict(p) for p in response.proxies]


def status(server: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    return convert.status_to_dict(_call(server, "GetStatus", admin_pb2.GetStatusRequest(), timeout))
