"""Versioned per-namespace snapshots, serialized once and shared by every ADS stream.

In: ``Resources`` ({type URL: {name: protobuf message}}) for one namespace, from ``serve``
(which calls the translator), or hand-built ones in tests.
Out: ``Snapshot`` values: a content-hash version per snapshot and per type, each resource
encoded once as ready-to-send wire chunks (a SotW ``DiscoveryResponse.resources`` entry and a
delta ``DeltaDiscoveryResponse.resources`` entry), whole SotW bodies pre-joined, and the
cross-references (listener -> route/cluster, route -> cluster, cluster -> endpoints) that
``consistent()`` and the ADS push order use.
``SnapshotCache`` keeps one snapshot per namespace, wakes the streams watching a namespace
when it changes, and asks a hook to compute the snapshot of a namespace nobody asked for
before. Read by ``egress_xds.server`` (ADS, debug endpoint); written by ``egress_xds.serve``.

This is the go-control-plane seam: ``set_snapshot(key, snapshot)``, ``get_snapshot(key)``,
``node_namespace(node)`` maps a node to its key.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from egress_xds.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SHORT_NAMES,
    Resources,
)

log = logging.getLogger(__name__)

_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_TCP_PROXY_URL = "type.googleapis.com/" + tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name


def content_version(pairs: Iterable[tuple[str, str]]) -> str:
    """Version of a set of (name, per-resource hash): 16 hex digits, order-independent."""
    digest = hashlib.sha256()
    for name, resource_hash in sorted(pairs):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(resource_hash.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class ResourceEntry:
    """One resource of one snapshot, encoded once.

    ``hash`` is the per-resource version (delta ``Resource.version``). ``sotw_chunk`` and
    ``delta_chunk`` are complete wire encodings of one ``resources`` field of a
    ``DiscoveryResponse`` / ``DeltaDiscoveryResponse``: responses are built by joining bytes.
    ``clusters``: clusters this resource sends traffic to (routes, tcp_proxy, inline route
    configs); ``routes``: RDS names a listener asks for; ``endpoints``: the EDS name of a cluster.
    """

    type_url: str
    name: str
    hash: str
    sotw_chunk: bytes
    delta_chunk: bytes
    size: int
    clusters: frozenset[str] = frozenset()
    routes: frozenset[str] = frozenset()
    endpoints: frozenset[str] = frozenset()


def _route_config_clusters(config: route_pb2.RouteConfiguration) -> set[str]:
    names: set[str] = set()
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            names |= _route_action_clusters(route)
    return names


def _route_action_clusters(route: route_components_pb2.Route) -> set[str]:
    names: set[str] = set()
    if not route.HasField("route"):
        return names
    action = route.route
    if action.cluster:
        names.add(action.cluster)
    for weighted in action.weighted_clusters.clusters:
        if weighted.name:
            names.add(weighted.name)
    for mirror in action.request_mirror_policies:
        if mirror.cluster:
            names.add(mirror.cluster)
    return names


def _listener_refs(listener: listener_pb2.Listener) -> tuple[set[str], set[str]]:
    """(clusters, RDS route names) a listener needs."""
    clusters: set[str] = set()
    routes: set[str] = set()
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            typed = network_filter.typed_config
            if typed.type_url == _TCP_PROXY_URL:
                proxy = tcp_proxy_pb2.TcpProxy()
                typed.Unpack(proxy)
                if proxy.cluster:
                    clusters.add(proxy.cluster)
                clusters.update(w.name for w in proxy.weighted_clusters.clusters if w.name)
            elif typed.type_url == _HCM_URL:
                hcm = hcm_pb2.HttpConnectionManager()
                typed.Unpack(hcm)
                if hcm.HasField("rds"):
                    routes.add(hcm.rds.route_config_name)
                elif hcm.HasField("route_config"):
                    clusters |= _route_config_clusters(hcm.route_config)
    return clusters, routes


def _cluster_eds_name(cluster: cluster_pb2.Cluster) -> str | None:
    if cluster.WhichOneof("cluster_discovery_type") == "type" and cluster.type == cluster_pb2.Cluster.EDS:
        return cluster.eds_cluster_config.service_name or cluster.name
    return None


def encode_entry(type_url: str, name: str, message: Message) -> ResourceEntry:
    """Serialize one resource once (deterministically) into both wire chunks."""
    value = message.SerializeToString(deterministic=True)
    resource_hash = hashlib.sha256(type_url.encode() + b"\0" + value).hexdigest()[:16]
    packed = any_pb2.Any(type_url=type_url, value=value)
    sotw_chunk = discovery_pb2.DiscoveryResponse(resources=[packed]).SerializeToString()
    delta_chunk = discovery_pb2.DeltaDiscoveryResponse(
        resources=[discovery_pb2.Resource(name=name, version=resource_hash, resource=packed)]
    ).SerializeToString()
    clusters: set[str] = set()
    routes: set[str] = set()
    endpoints: set[str] = set()
    if isinstance(message, listener_pb2.Listener):
        clusters, routes = _listener_refs(message)
    elif isinstance(message, route_pb2.RouteConfiguration):
        clusters = _route_config_clusters(message)
    elif isinstance(message, cluster_pb2.Cluster):
        eds = _cluster_eds_name(message)
        if eds:
            endpoints.add(eds)
    return ResourceEntry(type_url, name, resource_hash, sotw_chunk, delta_chunk, len(value),
                         frozenset(clusters), frozenset(routes), frozenset(endpoints))


_SERIALS = itertools.count(1)


class InconsistentSnapshot(ValueError):
    """A snapshot whose resources name clusters, routes or endpoints it does not contain."""


class Snapshot:
    """One namespace's complete config at one version.

    ``version`` is a content hash (equal resources give equal versions, across restarts too);
    ``type_versions[type_url]`` is the content hash of that type alone, so a change to
    listeners does not resend clusters. ``resources`` keeps the messages for ``dump()``.
    """

    def __init__(self, resources: Resources, version: str | None = None) -> None:
        self.resources: dict[str, dict[str, Message]] = {
            type_url: dict(by_name) for type_url, by_name in resources.items()
        }
        self.entries: dict[str, dict[str, ResourceEntry]] = {}
        self.type_versions: dict[str, str] = {}
        self._full_bodies: dict[str, bytes] = {}
        for type_url, by_name in self.resources.items():
            entries = {name: encode_entry(type_url, name, msg) for name, msg in sorted(by_name.items())}
            self.entries[type_url] = entries
            self.type_versions[type_url] = content_version((n, e.hash) for n, e in entries.items())
        self.version = version or content_version(self.type_versions.items())
        self.size_bytes = sum(e.size for by_name in self.entries.values() for e in by_name.values())
        self.created_at = time.time()
        # Unique in this process (content versions repeat when a change is undone): names
        # what is built once per snapshot and shared, such as the ADS server's SotW bodies.
        self.serial = next(_SERIALS)
        # Per type, state the ADS server derives from this snapshot once for all streams (the
        # view every wildcard SotW stream holds after receiving the whole set).
        self.views: dict[object, object] = {}

    def type_version(self, type_url: str) -> str:
        return self.type_versions.get(type_url) or content_version(())

    def sotw_body(self, type_url: str) -> bytes:
        """Every resource of ``type_url`` as joined ``resources`` fields (a wildcard response)."""
        body = self._full_bodies.get(type_url)
        if body is None:
            body = b"".join(e.sotw_chunk for e in self.entries.get(type_url, {}).values())
            self._full_bodies[type_url] = body
        return body

    def counts(self) -> dict[str, int]:
        return {type_url: len(self.entries.get(type_url, {})) for type_url in PUSH_ORDER}

    def problems(self) -> list[str]:
        """Dangling references: a route, tcp_proxy or inline route naming a missing cluster,
        a listener naming a missing RDS route, an EDS cluster without its endpoints."""
        clusters = self.entries.get(CLUSTER, {})
        routes = self.entries.get(ROUTE, {})
        endpoints = self.entries.get(ENDPOINT, {})
        out: list[str] = []
        for type_url, kind in ((LISTENER, "listener"), (ROUTE, "route configuration")):
            for name, entry in self.entries.get(type_url, {}).items():
                for cluster in sorted(entry.clusters - clusters.keys()):
                    out.append(f"{kind} {name} names cluster {cluster}, which does not exist")
                for route in sorted(entry.routes - routes.keys()):
                    out.append(f"{kind} {name} names route configuration {route}, which does not exist")
        for name, entry in clusters.items():
            for eds in sorted(entry.endpoints - endpoints.keys()):
                out.append(f"cluster {name} needs endpoints {eds}, which do not exist")
        return out

    def consistent(self) -> bool:
        return not self.problems()


def node_namespace(node: base_pb2.Node) -> str | None:
    """The snapshot key of a node: ``node.metadata.namespace`` (a non-empty string) or None."""
    field_value = node.metadata.fields.get("namespace")
    if field_value is None or field_value.WhichOneof("kind") != "string_value":
        return None
    return field_value.string_value or None


ComputeHook = Callable[[str], Awaitable[Snapshot | None]]


@dataclass
class _Watchers:
    # Insertion-ordered (a dict used as an ordered set): a change wakes the namespace's
    # streams in the order they started watching, oldest first. A set's order would be
    # that of memory addresses: which sidecar waits for the whole fan-out would be chance.
    callbacks: dict[Callable[[], None], None] = field(default_factory=dict)


class SnapshotCache:
    """One snapshot per namespace, plus the streams watching each namespace.

    ``set_snapshot`` replaces a namespace's snapshot (refusing inconsistent ones unless
    ``check=False``) and calls every watcher's wake-up callback synchronously, oldest
    watcher first: callbacks only set an event, so a slow stream never slows this call. ``request(ns)`` runs the compute
    hook once for a namespace without a snapshot (a sidecar from a namespace that holds no
    objects still gets the global-egress view).
    """

    def __init__(self, compute: ComputeHook | None = None) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._set_at: dict[str, float] = {}
        self._watchers: dict[str, _Watchers] = {}
        self._computing: dict[str, asyncio.Task[None]] = {}
        self.compute = compute

    def get_snapshot(self, namespace: str) -> Snapshot | None:
        return self._snapshots.get(namespace)

    def set_at(self, namespace: str) -> float:
        """``time.monotonic()`` of the last change of the namespace's snapshot."""
        return self._set_at.get(namespace, 0.0)

    def set_snapshot(self, namespace: str, snapshot: Snapshot, *, check: bool = True) -> bool:
        """Install ``snapshot``; True when the version changed (and watchers were woken)."""
        if check:
            problems = snapshot.problems()
            if problems:
                raise InconsistentSnapshot(f"namespace {namespace}: " + "; ".join(problems[:5]))
        old = self._snapshots.get(namespace)
        if old is not None and old.version == snapshot.version:
            return False
        self._snapshots[namespace] = snapshot
        self._set_at[namespace] = time.monotonic()
        log.info("snapshot set", extra={"namespace": namespace, "version": snapshot.version,
                                        "bytes": snapshot.size_bytes})
        self._wake(namespace)
        return True

    def clear_snapshot(self, namespace: str) -> None:
        self._snapshots.pop(namespace, None)
        self._set_at.pop(namespace, None)

    def namespaces(self) -> list[str]:
        return sorted(self._snapshots)

    def snapshots(self) -> Mapping[str, Snapshot]:
        return dict(self._snapshots)

    def watched_namespaces(self) -> list[str]:
        return sorted(ns for ns, w in self._watchers.items() if w.callbacks)

    def watch(self, namespace: str, wake: Callable[[], None]) -> None:
        self._watchers.setdefault(namespace, _Watchers()).callbacks[wake] = None

    def unwatch(self, namespace: str, wake: Callable[[], None]) -> None:
        watchers = self._watchers.get(namespace)
        if watchers is not None:
            watchers.callbacks.pop(wake, None)
            if not watchers.callbacks:
                del self._watchers[namespace]

    def _wake(self, namespace: str) -> None:
        watchers = self._watchers.get(namespace)
        for callback in list(watchers.callbacks if watchers else ()):
            callback()

    def request(self, namespace: str) -> None:
        """Compute the namespace's snapshot in the background if it has none (at most once
        at a time); watchers are woken when it is set."""
        if namespace in self._snapshots or namespace in self._computing or self.compute is None:
            return
        compute = self.compute

        async def run() -> None:
            try:
                snapshot = await compute(namespace)
                if snapshot is not None and namespace not in self._snapshots:
                    self.set_snapshot(namespace, snapshot)
            except Exception:
                log.exception("computing snapshot failed", extra={"namespace": namespace})
            finally:
                self._computing.pop(namespace, None)

        self._computing[namespace] = asyncio.get_running_loop().create_task(run())


def describe(snapshot: Snapshot) -> dict[str, Any]:
    """Short JSON summary of a snapshot (debug endpoint)."""
    return {
        "version": snapshot.version,
        "bytes": snapshot.size_bytes,
        "resources": {SHORT_NAMES.get(t, t): len(snapshot.entries.get(t, {})) for t in PUSH_ORDER},
        "type_versions": {SHORT_NAMES.get(t, t): v for t, v in snapshot.type_versions.items()},
    }
