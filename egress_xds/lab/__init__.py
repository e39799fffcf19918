"""The real-traffic lab: Kubernetes-like pods with an Envoy sidecar on one Linux machine.

Who calls it: the end-to-end tests (``tests/e2e``) and the demo (``make demo``). It needs
root, ``ip`` (iproute2), ``iptables`` and ``setpriv``; :func:`unavailable_reason` says why
not when it cannot run.

What goes in: pods to create, world servers to run (:class:`WorldServer`), an Envoy
bootstrap per pod (a file or a dict; written by the caller, e.g. with the project's
bootstrap renderer or a static one in a test).

What comes out: a :class:`Lab` with a world network namespace (TLS servers that report the
SNI they received, HTTP, TCP and gRPC echo servers that name themselves, all on
203.0.113.0/24 addresses; see :mod:`egress_xds.lab.world`) and pod namespaces
(198.51.100.0/24), each able to run Envoy as the proxy uid (1337) with the
``envoy/capture.sh`` iptables capture applied, and client exchanges from inside the pod
returning structured results (:class:`TcpResult`, :class:`TlsResult`, :class:`HttpResult`,
:class:`GrpcResult` with ``outcome`` ok/closed/reset/refused/timeout/unreachable/error).
Everything is torn down by ``Lab.close()`` / leaving the ``with`` block; a demo that must
outlive its process calls ``Lab.detach()`` and later :func:`destroy_detached`.

Reaching the control plane: Envoy in a pod cannot reach the root namespace's 127.0.0.1.
Either run the control plane inside the pod (``pod.popen([...serve...], name="cp")``, ADS
on the pod's 127.0.0.1), or, simpler, serve ADS on a unix socket in :meth:`Lab.socket_dir`
(a 0755 directory): ``egress-xds serve --ads-listen unix:DIR/ads.sock`` (the socket must be
mode 0666 so uid 1337 can connect) and ``egress-xds bootstrap --ads unix:DIR/ads.sock``,
which renders the ADS cluster endpoint as ``{pipe: {path: DIR/ads.sock}}``. Pathname unix
sockets are reachable across network namespaces; the lab tests prove Envoy as the proxy
uid connects to one served from the root namespace.

Example::

    from egress_xds.lab import Lab, WorldServer, standard_servers, wait_for

    with Lab() as lab:
        lab.serve(standard_servers())                       # tls-10/http-10/tcp-10 on .10 ...
        lab.serve([WorldServer.http("203.0.113.200", 80, "svc-a")])   # a "Service" backend
        pod = lab.add_pod("team-a")
        pod.start_envoy("bootstrap.yaml")                   # as uid 1337, waits for /ready
        pod.wait_for_listener(15001)
        pod.capture(skip_ports=[22])                        # envoy/capture.sh apply
        assert pod.tls("203.0.113.10", 443, "api.example.com").sni == "api.example.com"
        r = pod.http("203.0.113.10", 80, "/x", host="api.example.com")
        assert r.status == 200 and r.json["server"] == "http-10"
        assert pod.tcp("203.0.113.10", 9000, "ping").reply["echo"] == "ping"
        assert pod.grpc("203.0.113.10", 50051, "/pkg.Svc/M").server == "grpc-10"
        wait_for(lambda: pod.http("203.0.113.10", 80).status == 403, what="deny")  # live change
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from egress_xds.lab.client import GrpcResult, HttpResult, TcpResult, TlsResult, http_on
    from egress_xds.lab.netns import (
        POD_NETWORK,
        WORLD_NETWORK,
        LabError,
        remove_stale_namespaces,
        unavailable_reason,
    )
    from egress_xds.lab.pod import (
        ADMIN_PORT,
        OUTBOUND_PORT,
        PROXY_UID,
        Pod,
        capture_script,
        envoy_binary,
    )
    from egress_xds.lab.procs import LabProcess, wait_for
    from egress_xds.lab.topology import Lab, World, destroy_detached, standard_servers
    from egress_xds.lab.world import WorldServer

# Imported on first use, so ``python -m egress_xds.lab.world`` / ``.client`` start clean.
_HOME = {
    "egress_xds.lab.client": ["GrpcResult", "HttpResult", "TcpResult", "TlsResult", "http_on"],
    "egress_xds.lab.netns": ["POD_NETWORK", "WORLD_NETWORK", "LabError",
                             "remove_stale_namespaces", "unavailable_reason"],
    "egress_xds.lab.pod": ["ADMIN_PORT", "OUTBOUND_PORT", "PROXY_UID", "Pod", "capture_script",
                           "envoy_binary"],
    "egress_xds.lab.procs": ["LabProcess", "wait_for"],
    "egress_xds.lab.topology": ["Lab", "World", "destroy_detached", "standard_servers"],
    "egress_xds.lab.world": ["WorldServer"],
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}

__all__ = [
    "ADMIN_PORT",
    "OUTBOUND_PORT",
    "POD_NETWORK",
    "PROXY_UID",
    "WORLD_NETWORK",
    "GrpcResult",
    "HttpResult",
    "Lab",
    "LabError",
    "LabProcess",
    "Pod",
    "TcpResult",
    "TlsResult",
    "World",
    "WorldServer",
    "capture_script",
    "destroy_detached",
    "envoy_binary",
    "http_on",
    "remove_stale_namespaces",
    "standard_servers",
    "unavailable_reason",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
