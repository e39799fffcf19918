"""The admin gRPC service ``egress_xds.admin.v1.AdminService`` (protos/…/admin.proto).

In: the ``SnapshotCache`` (``GetSnapshot``), the ``AdsServer``'s streams (``ListProxies``,
``WatchProxies``) and an ``AdminBackend`` injected by ``serve`` for what only the translator
knows (``Explain``, ``GetStatus``): this package never imports the translators.
Out: admin API messages, converted from the same dicts ``/debug/*`` serves
(``egress_xds.admin.convert``). Registered with ``register`` on the ADS gRPC server, or on
the ``--admin-listen`` one; read by ``egress-xds explain --server`` / ``status --server``,
grpcurl and any gRPC client.

``WatchProxies`` polls the streams' sync state while at least one watch is open (one
``ProxyWatch`` for all watches, every ``watch_interval`` seconds) and only re-describes a
stream whose bookkeeping moved; each watch diffs the latest state against what it sent, so
a slow reader gets merged events and memory stays bounded by the number of sidecars.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from egress_xds.admin import convert
from egress_xds.admin.v1 import admin_pb2, admin_pb2_grpc
from egress_xds.cache import Snapshot, SnapshotCache
from egress_xds.resources import PUSH_ORDER
from egress_xds.server.ads import AdsServer, Stream

log = logging.getLogger(__name__)

SERVICE = "egress_xds.admin.v1.AdminService"
DEFAULT_WATCH_INTERVAL = 0.1
DEFAULT_MAX_WATCHES = 64
# Even when no stream's bookkeeping moved, re-describe everything this often (a safety net
# for changes the fingerprint cannot see).
FULL_REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class ExplainQuery:
    """One connection to explain (``ExplainRequest`` after validation)."""

    namespace: str
    ip: str
    port: int
    sni: str | None = None
    host: str | None = None
    path: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class AdminBackend(Protocol):
    """What the wiring provides: the translator's answers for the world being served."""

    async def explain(self, query: ExplainQuery) -> dict[str, Any]:
        """The verdict dict of ``Translator.explain`` ({egress_network, route, action,
        destination, reason})."""
        ...

    def status(self) -> dict[str, Any]:
        """The ``/debug/status`` report: {"objects": [...], "errors": [...]}."""
        ...


def explain_query(request: admin_pb2.ExplainRequest) -> ExplainQuery:
    """Validate an ``ExplainRequest``; ValueError says what is wrong."""
    if not request.namespace:
        raise ValueError("namespace is required")
    try:
        ip = str(ipaddress.ip_address(request.ip))
    except ValueError:
        raise ValueError(f"ip {request.ip!r}: expected an IPv4 or IPv6 address") from None
    if not 1 <= request.port <= 65535:
        raise ValueError(f"port {request.port}: must be within 1-65535")
    traffic = request.WhichOneof("traffic")
    if traffic == "tls":
        return ExplainQuery(request.namespace, ip, request.port, sni=request.tls.sni)
    if traffic == "http":
        http = request.http
        host = http.host if http.HasField("host") else None
        path = http.path if http.HasField("path") else None
        method = http.method if http.HasField("method") else None
        if host is None and path is None and method is None:
            path = "/"  # an empty HttpRequest is still an HTTP request: GET / to the IP
        return ExplainQuery(request.namespace, ip, request.port, host=host, path=path,
                            method=method, headers=dict(http.headers))
    return ExplainQuery(request.namespace, ip, request.port)


def snapshot_message(namespace: str, snapshot: Snapshot) -> admin_pb2.Snapshot:
    out = admin_pb2.Snapshot(namespace=namespace, version=snapshot.version,
                             type_versions=snapshot.type_versions, size_bytes=snapshot.size_bytes)
    order = [t for t in PUSH_ORDER if t in snapshot.entries] + sorted(set(snapshot.entries) - set(PUSH_ORDER))
    for type_url in order:
        for name, entry in sorted(snapshot.entries[type_url].items()):
            # The exact bytes the sidecars receive: the entry's pre-encoded Any.
            packed = discovery_pb2.DiscoveryResponse.FromString(entry.sotw_chunk).resources[0]
            out.resources.add(type_url=type_url, name=name, version=entry.hash, resource=packed)
    return out


def _fingerprint(stream: Stream, snapshot: Snapshot | None) -> Hashable:
    """Everything ``Stream.describe`` depends on, cheaply: equal fingerprints, equal states."""
    return (snapshot.version if snapshot is not None else None, tuple(
        (type_url, st.nonce, st.pending, st.version_sent, st.version_acked, st.held_version,
         st.acked_view_version, id(st.held), id(st.acked), len(st.held.hashes),
         len(st.acked.hashes), st.wildcard, frozenset(st.names), id(st.last_nack))
        for type_url, st in stream.types.items()))


class ProxyWatch:
    """The latest ``describe()`` of every stream, refreshed while someone watches."""

    def __init__(self, ads: AdsServer, cache: SnapshotCache, interval: float) -> None:
        self.ads = ads
        self.cache = cache
        self.interval = interval
        self.current: dict[int, dict[str, Any]] = {}
        self.generation = 0
        self.closed = False
        self.watchers = 0
        self._fingerprints: dict[int, Hashable] = {}
        self._changed = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._full_at = 0.0

    def refresh(self) -> None:
        """Re-read the streams; wake the watches if anything changed."""
        full = time.monotonic() - self._full_at > FULL_REFRESH_SECONDS
        if full:
            self._full_at = time.monotonic()
        streams = self.ads.streams
        changed = False
        for stream_id in [s for s in self.current if s not in streams]:
            del self.current[stream_id]
            self._fingerprints.pop(stream_id, None)
            changed = True
        for stream_id, stream in list(streams.items()):
            snapshot = self.cache.get_snapshot(stream.namespace)
            fingerprint = _fingerprint(stream, snapshot)
            if not full and self._fingerprints.get(stream_id) == fingerprint:
                continue
            self._fingerprints[stream_id] = fingerprint
            described = stream.describe(snapshot)
            if self.current.get(stream_id) != described:
                self.current[stream_id] = described
                changed = True
        if changed:
            self._bump()

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, generation: int) -> int:
        """Return once the generation moved past ``generation`` (or the watch closed)."""
        while self.generation == generation and not self.closed:
            await self._changed.wait()
        return self.generation

    def join(self) -> None:
        self.watchers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def leave(self) -> None:
        self.watchers -= 1
        if self.watchers == 0 and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll(self) -> None:
        while self.watchers > 0 and not self.closed:
            try:
                self.refresh()
            except Exception:  # a bug here must not kill the watches silently
                log.exception("refreshing proxy states failed")
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        self.closed = True
        self._bump()
        if self._poller is not None:
            self._poller.cancel()


def _sort_key(proxy: dict[str, Any]) -> tuple[str, str, int]:
    return proxy["namespace"], proxy["node_id"], proxy["id"]


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """``AdminService`` over the cache, the ADS streams and an ``AdminBackend``.
    ``close()`` ends every ``WatchProxies`` stream with status OK (used on shutdown)."""

    def __init__(self, cache: SnapshotCache, ads: AdsServer, backend: AdminBackend, *,
                 watch_interval: float = DEFAULT_WATCH_INTERVAL,
                 max_watches: int = DEFAULT_MAX_WATCHES) -> None:
        self.cache = cache
        self.ads = ads
        self.backend = backend
        self.max_watches = max_watches
        self.watch = ProxyWatch(ads, cache, watch_interval)

    def register(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self, server)

    def close(self) -> None:
        self.watch.close()

    async def Explain(self, request: admin_pb2.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> admin_pb2.Verdict:
        try:
            query = explain_query(request)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        try:
            verdict = await self.backend.explain(query)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:
            log.exception("explain failed", extra={"namespace": request.namespace})
            await context.abort(grpc.StatusCode.INTERNAL, f"explain failed: {err}")
        return convert.verdict_message(verdict)

    async def GetSnapshot(self, request: admin_pb2.GetSnapshotRequest,
                          context: grpc.aio.ServicerContext) -> admin_pb2.Snapshot:
        snapshot = self.cache.get_snapshot(request.namespace)
        if snapshot is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no snapshot for namespace {request.namespace!r}; namespaces with one: "
                f"{', '.join(self.cache.namespaces()) or '(none)'}")
        assert snapshot is not None
        return snapshot_message(request.namespace, snapshot)

    async def ListProxies(self, request: admin_pb2.ListProxiesRequest,
                          context: grpc.aio.ServicerContext) -> admin_pb2.ListProxiesResponse:
        proxies = [p for p in self.ads.describe()
                   if not request.namespace or p["namespace"] == request.namespace]
        return admin_pb2.ListProxiesResponse(proxies=[convert.proxy_message(p) for p in proxies])

    async def GetStatus(self, request: admin_pb2.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> admin_pb2.StatusReport:
        return convert.status_message(self.backend.status())

    async def WatchProxies(self, request: admin_pb2.WatchProxiesRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[admin_pb2.ProxyEvent]:
        watch = self.watch
        if watch.closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "egress-xds is shutting down")
        if watch.watchers >= self.max_watches:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"at most {self.max_watches} WatchProxies streams at a time")
        namespace = request.namespace

        def visible() -> dict[int, dict[str, Any]]:
            return {i: p for i, p in watch.current.items() if not namespace or p["namespace"] == namespace}

        watch.join()
        try:
            watch.refresh()
            generation = watch.generation
            sent = visible()
            yield admin_pb2.ProxyEvent(kind=admin_pb2.ProxyEvent.CURRENT, proxies=[
                convert.proxy_message(p) for p in sorted(sent.values(), key=_sort_key)])
            while True:
                generation = await watch.wait(generation)
                if watch.closed:
                    return
                now = visible()
                events: list[tuple[dict[str, Any], admin_pb2.ProxyEvent.Kind]] = []
                for stream_id, proxy in sent.items():
                    if stream_id not in now:
                        events.append((proxy, admin_pb2.ProxyEvent.DISCONNECTED))
                for stream_id, proxy in now.items():
                    if stream_id not in sent:
                        events.append((proxy, admin_pb2.ProxyEvent.CONNECTED))
                    elif sent[stream_id] != proxy:
                        events.append((proxy, admin_pb2.ProxyEvent.CHANGED))
                sent = now
                for proxy, kind in sorted(events, key=lambda e: _sort_key(e[0])):
                    yield admin_pb2.ProxyEvent(kind=kind, proxies=[convert.proxy_message(proxy)])
        finally:
            watch.leave()



def add_admin_services(server: grpc.aio.Server, admin: AdminServicer, csds: Any,
                       also_served: tuple[str, ...] = ()) -> list[str]:
    """Register the admin API, CSDS (a ``csds.CsdsServicer``) and, when grpcio-reflection
    is installed, server reflection listing them and ``also_served`` (e.g. ADS when they
    share its server). Returns the service names registered."""
    from egress_xds.server.csds import SERVICE as CSDS_SERVICE

    admin.register(server)
    csds.register(server)
    names = [SERVICE, CSDS_SERVICE, *also_served]
    try:
        from grpc_reflection.v1alpha import reflection
    except ImportError:  # optional: grpcurl then needs -proto protos/…/admin.proto
        log.info("grpcio-reflection is not installed: no server reflection")
        return names
    names.append(reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    return names
