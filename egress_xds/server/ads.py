"""The ADS gRPC service: SotW ``StreamAggregatedResources`` and delta ``DeltaAggregatedResources``.

In: ``DiscoveryRequest`` / ``DeltaDiscoveryRequest`` messages from sidecars; snapshots from a
``SnapshotCache`` (keyed by ``node.metadata.namespace``).
Out: responses assembled from the snapshot's pre-encoded bytes (a generic gRPC handler with
an identity serializer). A snapshot's complete set of a type (SotW), or a change planned for
streams in the same state (delta), is one response built once and sent as the same bytes to
every stream, under a nonce naming the snapshot and type; other responses encode their
version, nonce and type per stream (their nonces are all digits). Also per-stream state for
``/debug/proxies``, and metrics. Registered on a ``grpc.aio`` server by ``serve``
and by the feature tests.

Rules (numbers refer to xds-server.md):
1. the node comes from the first request; no namespace -> INVALID_ARGUMENT.
2. per stream and type: nonce, version sent/acked, names, last NACK (``TypeState``).
3. a request answering an older nonce is stale and ignored (delta: its ACK/NACK part).
4. ``error_detail`` = NACK: recorded, the client keeps its last good config, and the
   rejected content is never sent again (only a changed snapshot is).
5. the first request of each type is always answered.
6. listeners and clusters are wildcard; named subscriptions remember unknown names.
7. SotW sends complete sets; delta sends changed resources and ``removed_resources``.
8. types go out in the order clusters, endpoints, listeners, routes; a listener or route
   waits until the clusters it names have been sent, and a cluster the proxy still uses
   (through the listeners/routes it holds) is kept until those are replaced.
9. one un-acked response per type; newer snapshots coalesce while waiting. Each stream
   writes from its own task and the cache only sets an event: no stream waits for another.
10. an unchanged set is never sent again.
11. bytes come from the snapshot, encoded once per version; whole shared responses are
    built once per snapshot and type, and a stream never gets one twice (nonces stay unique
    per stream).

Limits and identity (``Limits``, ``serve --max-streams/--max-requests-per-second``, mTLS):
at most ``max_streams`` streams at once, at most ``max_requests_per_second`` requests per
stream (a token bucket holding ``burst``), at most ``max_types_per_stream`` type URLs per
stream; beyond, that stream alone ends with RESOURCE_EXHAUSTED and a ``limit hit`` warning.
With an identity resolver (``identity.SpiffeResolver``) the peer's certificate names the
namespace: a node claiming another is refused with PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from egress_xds.cache import ResourceEntry, Snapshot, SnapshotCache, content_version, node_namespace
from egress_xds.resources import CLUSTER, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from egress_xds.server.identity import IdentityError, PeerIdentity
from egress_xds.server.metrics import Metrics

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
WILDCARD_TYPES = (LISTENER, CLUSTER)
MISSING_NAMESPACE = (
    "node.metadata.namespace is not set: egress-xds serves config per namespace; set the "
    "sidecar's namespace in the Envoy bootstrap (node: {metadata: {namespace: NS}}), e.g. with "
    "`egress-xds bootstrap --namespace NS`"
)

SYNCED, STALE, NACKED, NOT_SENT = "SYNCED", "STALE", "NACKED", "NOT SENT"

# Given a stream's context, the verified peer identity (or IdentityError to refuse it).
IdentityResolver = Callable[[Any], PeerIdentity]


@dataclass(frozen=True)
class Limits:
    """Per-server and per-stream limits; 0 disables one."""

    max_streams: int = 10_000
    max_requests_per_second: float = 100.0
    burst: int = 200
    max_types_per_stream: int = 32
    # Requests larger than this end their stream (RESOURCE_EXHAUSTED, logged); serve sets
    # gRPC's own receive limit to twice this as a backstop (rejected by gRPC, not logged).
    max_message_bytes: int = 4 * 1024 * 1024


class RequestRejected(Exception):
    """Raised while decoding a request: the stream ends with ``code``."""

    def __init__(self, code: grpc.StatusCode, message: str, event: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event = event
        self.extra = extra


def _parser(message_type: Any, max_bytes: int) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        if max_bytes and len(data) > max_bytes:
            raise RequestRejected(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {len(data)} bytes is larger than {max_bytes} (--max-message-bytes)",
                "limit hit: message size, stream ended", limit="max_message_bytes",
                max_message_bytes=max_bytes, size=len(data))
        try:
            return message_type.FromString(data)
        except DecodeError as err:
            raise RequestRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"malformed {message_type.DESCRIPTOR.name}: {err}",
                                  "malformed request, stream ended", size=len(data)) from None
    return parse


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``take()`` spends one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1.0, float(burst))
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


@dataclass
class Nack:
    version: str
    nonce: str
    message: str
    code: int
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "nonce": self.nonce, "message": self.message,
                "code": self.code, "at": self.at}


@dataclass
class ClientView:
    """What the proxy holds for one type: per-resource hash, and our entry when we know it."""

    hashes: dict[str, str] = field(default_factory=dict)
    entries: dict[str, ResourceEntry] = field(default_factory=dict)
    # A shared view (one per snapshot and type, held by every stream that got the whole
    # set) must never change: ``put``/``drop`` refuse it.
    shared: bool = False
    _clusters: frozenset[str] | None = field(default=None, repr=False, compare=False)

    def copy(self) -> ClientView:
        return ClientView(dict(self.hashes), dict(self.entries))

    def put(self, entry: ResourceEntry) -> None:
        if self.shared:
            raise RuntimeError("a shared client view cannot change")
        self.hashes[entry.name] = entry.hash
        self.entries[entry.name] = entry
        self._clusters = None

    def drop(self, name: str) -> None:
        if self.shared:
            raise RuntimeError("a shared client view cannot change")
        self.hashes.pop(name, None)
        self.entries.pop(name, None)
        self._clusters = None

    def clusters(self) -> frozenset[str]:
        """The clusters the held listeners/routes name (computed once per content)."""
        if self._clusters is None:
            self._clusters = frozenset().union(*(entry.clusters for entry in self.entries.values()))
        return self._clusters


@dataclass
class TypeState:
    """Rule 2: everything a stream remembers about one type URL."""

    type_url: str
    requested: bool = False
    answer_first: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    nonce: str | None = None
    version_sent: str | None = None
    version_acked: str | None = None
    pending: bool = False
    sent_at: float = 0.0
    held: ClientView = field(default_factory=ClientView)  # after the in-flight response
    acked: ClientView = field(default_factory=ClientView)  # as of the last ACK
    held_version: str | None = None  # content version of ``held`` (None: unknown)
    acked_view_version: str | None = None  # content version of ``acked``
    last_nack: Nack | None = None
    nacked_version: str | None = None  # SotW: never resend this version
    nacked_hashes: dict[str, str] = field(default_factory=dict)  # delta: never resend these
    absent_reported: set[str] = field(default_factory=set)  # delta: names told not to exist
    in_flight: list[ResourceEntry] = field(default_factory=list)  # delta: entries of last response
    shared_from: int | None = None  # serial of the snapshot whose shared response was last sent


@dataclass(frozen=True)
class Target:
    """The resources a proxy should hold for one type, their content version, and whether
    they are the snapshot's whole set (then the shared response is sent)."""

    entries: Mapping[str, ResourceEntry]
    full: bool
    version: str


@dataclass(frozen=True)
class _SotwBody:
    """A whole SotW response for every stream that gets the snapshot's complete set of one
    type: built once per snapshot and type, sent as the same bytes (rule 11). Its nonce
    names the snapshot and type; ``Stream`` never sends it twice on one stream."""

    nonce: str
    body: bytes
    clusters: frozenset[str]  # what its resources name (rule 8)


def _shared_nonce(snapshot: Snapshot, type_url: str) -> str:
    """The nonce of a response shared by every stream: it names the snapshot and type (never
    all digits, unlike a stream's own nonces); ``Stream`` sends it at most once per stream."""
    return f"{snapshot.serial}.{short(type_url)}"


def _sotw_body(snapshot: Snapshot, type_url: str) -> _SotwBody:
    key = ("sotw", type_url)
    found = snapshot.views.get(key)
    if isinstance(found, _SotwBody):
        return found
    entries = snapshot.entries.get(type_url, {})
    nonce = _shared_nonce(snapshot, type_url)
    trailer = discovery_pb2.DiscoveryResponse(
        version_info=snapshot.type_version(type_url), type_url=type_url, nonce=nonce,
        control_plane=CONTROL_PLANE).SerializeToString()
    built = _SotwBody(nonce, b"".join([*(e.sotw_chunk for e in entries.values()), trailer]),
                      frozenset().union(*(e.clusters for e in entries.values())))
    snapshot.views[key] = built
    return built


def _shared_view(snapshot: Snapshot, type_url: str, entries: Mapping[str, ResourceEntry]) -> ClientView:
    """The view of a proxy holding all of ``snapshot``'s resources of ``type_url``: one per
    snapshot and type, shared by every stream (never changed: see ``ClientView.shared``)."""
    view = snapshot.views.get(type_url)
    if not isinstance(view, ClientView):
        view = ClientView({n: e.hash for n, e in entries.items()}, dict(entries), shared=True)
        snapshot.views[type_url] = view
    return view


@dataclass(frozen=True)
class _DeltaPlan:
    """A delta response's content for a proxy holding a given shared view (``held``, by
    weak reference: the plan must not keep the previous snapshot's entries alive)."""

    held: weakref.ref[ClientView]
    changed: list[ResourceEntry]
    removed: list[str]
    clusters: frozenset[str]  # the clusters the changed entries name (rule 8)
    nonce: str  # names the snapshot and type, like ``_SotwBody``'s
    body: bytes  # the whole response, the same bytes for every stream it goes to (rule 11)


def _delta_plan(snapshot: Snapshot, type_url: str, held: ClientView, entries: Mapping[str, ResourceEntry]
                ) -> _DeltaPlan:
    """What a wildcard delta stream holding the shared view ``held`` gets to hold all of
    ``snapshot``'s resources of ``type_url``: computed once per snapshot, type and view, so a
    change reaching a thousand streams in the same state is planned once, not per stream."""
    key = ("delta", type_url, id(held))
    found = snapshot.views.get(key)
    if isinstance(found, _DeltaPlan) and found.held() is held:
        return found
    changed = [e for n, e in sorted(entries.items()) if held.hashes.get(n) != e.hash]
    removed = sorted(n for n in held.hashes if n not in entries)
    nonce = _shared_nonce(snapshot, type_url)
    head = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=snapshot.type_version(type_url), type_url=type_url, nonce=nonce,
        removed_resources=removed, control_plane=CONTROL_PLANE).SerializeToString()
    plan = _DeltaPlan(weakref.ref(held), changed, removed, frozenset().union(*(e.clusters for e in changed)),
                      nonce, b"".join([head, *(e.delta_chunk for e in changed)]))
    snapshot.views[key] = plan
    return plan


class Stream:
    """One ADS stream of one proxy: request bookkeeping and response planning.

    Requests are applied by the stream's reader task (``on_request``); responses are planned
    by its writer (``responses``), which works only on this stream's state.
    """

    def __init__(self, stream_id: int, node: base_pb2.Node, namespace: str, delta: bool,
                 peer: str) -> None:
        self.id = stream_id
        self.node_id = node.id
        self.cluster = node.cluster
        self.namespace = namespace
        self.delta = delta
        self.peer = peer
        self.connected_at = time.time()
        self.types: dict[str, TypeState] = {}
        self._order: tuple[str, ...] | None = None
        self.wake = asyncio.Event()
        self.closed = False
        self.nacks: list[str] = []  # type URLs NACKed since the writer last looked (metrics)
        self.refused: tuple[grpc.StatusCode, str] | None = None  # a limit ended the stream
        self._nonces = itertools.count(1)
        self.responses_built = 0  # responses planned for this stream (shared ones included)
        # Set while planning when something waits for an ACK: a type with a response in
        # flight (a newer snapshot coalesces, rule 9), a listener/route waiting for its
        # clusters, or a cluster kept for the listeners/routes still naming it (rule 8).
        self.deferred = False

    @property
    def mode(self) -> str:
        return "delta" if self.delta else "sotw"

    def state(self, type_url: str) -> TypeState:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = TypeState(type_url)
            self._order = None
        return st

    # ---- requests -------------------------------------------------------------------------

    def on_request(self, request: Any) -> bool:
        """Apply a request; True when a response may now be due (the writer must look).
        A plain ACK is not a reason, unless the last planning deferred something to it."""
        if self.delta:
            return self._on_delta(request)
        return self._on_sotw(request)

    def _on_sotw(self, req: discovery_pb2.DiscoveryRequest) -> bool:
        st = self.state(req.type_url)
        if st.nonce is not None and req.response_nonce != st.nonce:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("stale request ignored", extra=self._ctx(st, nonce=req.response_nonce))
            return False
        before = (st.wildcard, st.names)
        names = set(req.resource_names)
        if req.type_url in WILDCARD_TYPES:
            st.wildcard = not names or "*" in names
        else:
            # Legacy wildcard: a first request without names, kept while names stay empty.
            st.wildcard = "*" in names or (not names and (not st.requested or st.wildcard))
        st.names = names - {"*"}
        if not st.requested:
            st.requested = st.answer_first = True
            return True
        resubscribed = (st.wildcard, st.names) != before
        if st.nonce is None:
            return resubscribed
        if req.HasField("error_detail"):
            self._nack(st, req.error_detail.message, req.error_detail.code)
            return True
        self._ack(st, req.version_info)
        return resubscribed or self.deferred

    def _on_delta(self, req: discovery_pb2.DeltaDiscoveryRequest) -> bool:
        st = self.state(req.type_url)
        subscribe = set(req.resource_names_subscribe)
        unsubscribe = set(req.resource_names_unsubscribe)
        due = bool(subscribe or unsubscribe) or not st.requested
        if not st.requested:
            st.requested = st.answer_first = True
            st.wildcard = not subscribe or "*" in subscribe
            for name, version in req.initial_resource_versions.items():
                st.held.hashes[name] = version
                st.acked.hashes[name] = version
            st.held_version = st.acked_view_version = content_version(st.held.hashes.items())
        else:
            if "*" in subscribe:
                st.wildcard = True
            if "*" in unsubscribe:
                st.wildcard = False
        if (subscribe | unsubscribe) - {"*"}:  # the views may change below: own them
            if st.held.shared:
                st.held = st.held.copy()
            if st.acked.shared:
                st.acked = st.acked.copy() if st.acked is not st.held else st.held
        for name in subscribe - {"*"}:
            if name not in st.names:
                # A newly added name is answered even if it was sent before (rule 6).
                st.names.add(name)
                if name not in req.initial_resource_versions:
                    st.held.drop(name)
                    st.acked.drop(name)
                    st.held_version = st.acked_view_version = None
                st.absent_reported.discard(name)
        for name in unsubscribe - {"*"}:
            st.names.discard(name)
            st.held.drop(name)
            st.acked.drop(name)
            st.held_version = st.acked_view_version = None
            st.absent_reported.discard(name)
        if req.response_nonce:
            if req.response_nonce != st.nonce:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("stale request ignored", extra=self._ctx(st, nonce=req.response_nonce))
            elif req.HasField("error_detail"):
                self._nack(st, req.error_detail.message, req.error_detail.code)
                due = True
            else:
                self._ack(st, st.version_sent or "")
                due = due or self.deferred
        return due

    def _ack(self, st: TypeState, version: str) -> None:
        if st.pending and log.isEnabledFor(logging.DEBUG):
            log.debug("ack", extra=self._ctx(st, version=version))
        st.pending = False
        st.version_acked = version
        st.acked = st.held  # views are replaced, not changed, once sent (drops hit both)
        st.acked_view_version = st.held_version
        if version != st.nacked_version:
            st.nacked_version = None
        for entry in st.in_flight:
            st.nacked_hashes.pop(entry.name, None)
        st.in_flight = []

    def _nack(self, st: TypeState, message: str, code: int) -> None:
        version = st.version_sent or ""
        st.last_nack = Nack(version, st.nonce or "", message, code, time.time())
        st.nacked_version = version
        for entry in st.in_flight:
            st.nacked_hashes[entry.name] = entry.hash
        st.in_flight = []
        st.pending = False
        st.held = st.acked  # the proxy keeps its last good config
        st.held_version = st.acked_view_version
        log.warning("nack", extra=self._ctx(st, version=version, error=message))
        self.nacks.append(st.type_url)

    # ---- responses ------------------------------------------------------------------------

    def order(self) -> tuple[str, ...]:
        """The stream's type URLs in push order (rule 8), then the others sorted; computed
        again only when a type is added."""
        if self._order is None:
            rest = sorted(t for t in self.types if t not in PUSH_ORDER)
            self._order = (*(t for t in PUSH_ORDER if t in self.types), *rest)
        return self._order

    def target(self, st: TypeState, snapshot: Snapshot) -> Target:
        """What the proxy should hold for ``st`` now."""
        entries = snapshot.entries.get(st.type_url, {})
        retained: dict[str, ResourceEntry] = {}
        if st.type_url == CLUSTER:
            # Rule 8: a cluster leaves only after the listeners and routes naming it do.
            cluster_state = self.types[CLUSTER]
            for name in sorted(self._clusters_in_use() - entries.keys()):
                if st.wildcard or name in st.names:
                    old = cluster_state.held.entries.get(name) or cluster_state.acked.entries.get(name)
                    if old is not None:
                        retained[name] = old
        if retained:
            self.deferred = True
        if st.wildcard and not retained:
            return Target(entries, True, snapshot.type_version(st.type_url))
        if st.wildcard:
            chosen = dict(entries)
        else:
            chosen = {n: entries[n] for n in sorted(st.names) if n in entries}
        chosen.update(retained)
        if not retained and len(chosen) == len(entries):
            return Target(chosen, True, snapshot.type_version(st.type_url))
        return Target(chosen, False, content_version((n, e.hash) for n, e in chosen.items()))

    def _clusters_in_use(self) -> set[str]:
        names: set[str] = set()
        for type_url in (LISTENER, ROUTE):
            st = self.types.get(type_url)
            if st is None:
                continue
            names |= st.held.clusters()
            if st.acked is not st.held:
                names |= st.acked.clusters()
        return names

    def _clusters_ready(self, needed: frozenset[str], snapshot: Snapshot) -> bool:
        """Rule 8: listeners and routes go out only once the clusters they name (``needed``)
        were sent."""
        cluster_state = self.types.get(CLUSTER)
        if cluster_state is None or not cluster_state.requested:
            return True
        missing = needed - cluster_state.held.hashes.keys()
        return not (missing & snapshot.entries.get(CLUSTER, {}).keys())

    def responses(self, snapshot: Snapshot) -> Iterator[tuple[str, bytes, bool]]:
        """Yield (type URL, response bytes, is-first) for every type due a response now,
        updating the state as each is sent. Lazy: each is planned after the previous write."""
        self.deferred = False
        for type_url in self.order():
            st = self.types[type_url]
            if st.pending:
                self.deferred = True
            if not st.requested or st.pending:
                continue
            first = st.answer_first
            body = self._delta_response(st, snapshot) if self.delta else self._sotw_response(st, snapshot)
            if body is not None:
                yield type_url, body, first

    def _sotw_response(self, st: TypeState, snapshot: Snapshot) -> bytes | None:
        if (st.wildcard and not st.answer_first and st.acked is st.held
                and st.version_acked == snapshot.type_version(st.type_url)):
            # Nothing to send, decided without planning (most streams, most types, in a
            # fan-out): the proxy acked exactly the snapshot's set (versions are content
            # hashes), so no cluster is retained for it either (rule 8).
            return None
        target = self.target(st, snapshot)
        version = target.version
        if not st.answer_first and (version == st.version_acked or version == st.nacked_version):
            return None
        entries = target.entries
        # The whole set, not yet sent from this snapshot on this stream (a stream that
        # narrowed its route names and widened them again gets its own body: a nonce is
        # never sent twice on one stream): the shared response, same bytes for every stream.
        shared = _sotw_body(snapshot, st.type_url) if target.full and st.shared_from != snapshot.serial else None
        if st.type_url in (LISTENER, ROUTE) and not self._clusters_ready(
                shared.clusters if shared is not None else frozenset().union(*(e.clusters for e in entries.values())),
                snapshot):
            self.deferred = True
            return None
        if shared is not None:  # one view for every stream holding the whole set
            st.shared_from = snapshot.serial
            self._sent(st, shared.nonce, version, _shared_view(snapshot, st.type_url, entries), version)
            return shared.body
        nonce = str(next(self._nonces))
        resources = snapshot.sotw_body(st.type_url) if target.full else b"".join(
            entries[n].sotw_chunk for n in sorted(entries))
        trailer = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=st.type_url, nonce=nonce,
            control_plane=CONTROL_PLANE).SerializeToString()
        view = (_shared_view(snapshot, st.type_url, entries) if target.full
                else ClientView({n: e.hash for n, e in entries.items()}, dict(entries)))
        self._sent(st, nonce, version, view, version)
        return resources + trailer

    def _delta_response(self, st: TypeState, snapshot: Snapshot) -> bytes | None:
        if (st.wildcard and not st.answer_first and st.acked is st.held
                and st.held_version == snapshot.type_version(st.type_url)):
            return None  # as in _sotw_response: the proxy holds exactly the snapshot's set
        target = self.target(st, snapshot)
        version = target.version
        if st.wildcard and not st.answer_first and st.held_version == version:
            return None  # the proxy already holds exactly this set
        entries = target.entries
        plan = None
        # A stream holding a shared view gets the shared response (at most once per snapshot:
        # a nonce is never sent twice on one stream).
        if (target.full and st.wildcard and st.held.shared and not st.nacked_hashes
                and st.shared_from != snapshot.serial):
            plan = _delta_plan(snapshot, st.type_url, st.held, entries)
            changed, removed, needed = plan.changed, list(plan.removed), plan.clusters
        else:
            changed = [e for n, e in sorted(entries.items())
                       if st.held.hashes.get(n) != e.hash and st.nacked_hashes.get(n) != e.hash]
            removed = sorted(n for n in st.held.hashes if n not in entries)
            needed = frozenset().union(*(e.clusters for e in changed))
        if not st.wildcard:
            absent = sorted(st.names - entries.keys() - st.held.hashes.keys() - st.absent_reported)
            removed += absent
        else:
            absent = []
        if not changed and not removed and not st.answer_first:
            return None
        if st.type_url in (LISTENER, ROUTE) and not self._clusters_ready(needed, snapshot):
            self.deferred = True
            return None
        st.absent_reported.update(absent)
        if plan is not None:  # wildcard: nothing absent to report; the plan's removed as sent
            st.shared_from = snapshot.serial
            self._sent(st, plan.nonce, version, _shared_view(snapshot, st.type_url, entries), version)
            st.in_flight = changed
            return plan.body
        nonce = str(next(self._nonces))
        head = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=version, type_url=st.type_url, nonce=nonce,
            removed_resources=removed, control_plane=CONTROL_PLANE).SerializeToString()
        if target.full and not st.nacked_hashes:
            # every entry differing is sent and every other name removed: the proxy then
            # holds exactly the snapshot's set, whose view and version are shared
            self._sent(st, nonce, version, _shared_view(snapshot, st.type_url, entries), version)
        else:
            view = st.held.copy()
            for name in removed:
                view.drop(name)
            for entry in changed:
                view.put(entry)
            self._sent(st, nonce, version, view, content_version(view.hashes.items()))
        st.in_flight = changed
        return b"".join([head, *(e.delta_chunk for e in changed)])

    def _sent(self, st: TypeState, nonce: str, version: str, view: ClientView,
              view_version: str) -> None:
        self.responses_built += 1
        st.nonce = nonce
        st.version_sent = version
        st.held_version = view_version
        st.pending = True
        st.answer_first = False
        st.sent_at = time.time()
        st.held = view
        if log.isEnabledFor(logging.DEBUG):
            log.debug("push", extra=self._ctx(st, version=version))

    # ---- status ---------------------------------------------------------------------------

    def type_status(self, st: TypeState, snapshot: Snapshot | None) -> str:
        """NOT SENT; STALE while a response is un-acked or the proxy is behind the snapshot;
        NACKED when the proxy rejected the latest content (and runs its last good config);
        SYNCED when what it acked is what the snapshot says."""
        if st.nonce is None:
            return NOT_SENT
        if st.pending or snapshot is None:
            return STALE
        target = self.target(st, snapshot).entries
        want = {n: e.hash for n, e in target.items()}
        have = st.acked.hashes
        if self.delta and not st.wildcard:
            # Delta clients may hold names they subscribed to before they existed.
            have = {n: h for n, h in have.items() if n in target}
        if want == have:
            return SYNCED
        if st.last_nack is not None and st.last_nack.nonce == st.nonce:
            return NACKED
        return STALE

    def describe(self, snapshot: Snapshot | None) -> dict[str, Any]:
        types: dict[str, Any] = {}
        for type_url in self.order():
            st = self.types[type_url]
            types[short(type_url)] = {
                "type_url": type_url,
                "state": self.type_status(st, snapshot),
                "version_sent": st.version_sent,
                "version_acked": st.version_acked,
                "nonce": st.nonce,
                "subscribed": "*" if st.wildcard else sorted(st.names),
                "resources": len(st.acked.hashes),
                "last_nack": st.last_nack.as_dict() if st.last_nack else None,
            }
        return {
            "id": self.id,
            "node_id": self.node_id,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "mode": self.mode,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "snapshot_version": snapshot.version if snapshot else None,
            "types": types,
        }

    def _ctx(self, st: TypeState, **extra: Any) -> dict[str, Any]:
        return {"stream": self.id, "node": self.node_id, "namespace": self.namespace,
                "mode": self.mode, "type": short(st.type_url), "nonce_sent": st.nonce, **extra}


CONTROL_PLANE = base_pb2.ControlPlane(identifier=f"egress-xds@{socket.gethostname()}")


def _identity(data: bytes) -> bytes:
    return data


class AdsServer:
    """The ADS service over a ``SnapshotCache``. Add it to a ``grpc.aio`` server with
    ``server.add_generic_rpc_handlers([ads.handler()])``; ``close()`` ends every stream with
    status OK (used on SIGTERM)."""

    def __init__(self, cache: SnapshotCache, metrics: Metrics | None = None, *,
                 identity: IdentityResolver | None = None, limits: Limits | None = None) -> None:
        self.cache = cache
        self.metrics = metrics or Metrics()
        self.identity = identity
        self.limits = limits or Limits()
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._active = 0  # handlers running, including streams not yet past their first request
        self._idle = asyncio.Event()  # set while no handler runs (``wait_closed``)
        self._idle.set()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw, request_deserializer=_parser(discovery_pb2.DiscoveryRequest,
                                                         self.limits.max_message_bytes),
                response_serializer=_identity),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=_parser(discovery_pb2.DeltaDiscoveryRequest,
                                                          self.limits.max_message_bytes),
                response_serializer=_identity),
        })

    def close(self) -> None:
        self._closing = True
        for stream in list(self.streams.values()):
            stream.closed = True
            stream.wake.set()

    async def wait_closed(self, timeout: float) -> bool:
        """After ``close``: wait at most ``timeout`` seconds until every stream's handler has
        returned (so each stream ends with status OK); True if they all did."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe(self.cache.get_snapshot(s.namespace))
                for s in sorted(self.streams.values(), key=lambda s: (s.namespace, s.node_id, s.id))]

    async def _sotw(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await self._serve(requests, context, delta=False)

    async def _delta(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        await self._serve(requests, context, delta=True)

    async def _serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                     delta: bool) -> None:
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "egress-xds is shutting down")
        limit = self.limits.max_streams
        if limit and self._active >= limit:
            log.warning("limit hit: max streams, stream refused",
                        extra={"limit": "max_streams", "max_streams": limit, "peer": context.peer()})
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"egress-xds serves at most {limit} ADS streams (--max-streams)")
        self._active += 1
        self._idle.clear()
        try:
            await self._serve_stream(requests, context, delta)
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _serve_stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                            delta: bool) -> None:
        peer_identity: PeerIdentity | None = None
        if self.identity is not None:
            try:
                peer_identity = self.identity(context)
            except IdentityError as err:
                log.warning("stream refused: client identity",
                            extra={"peer": context.peer(), "code": err.code.name, "error": err.message})
                await context.abort(err.code, err.message)
        try:
            first = await anext(aiter(requests))
        except StopAsyncIteration:
            return
        except RequestRejected as err:
            log.warning(err.event, extra={"peer": context.peer(), "error": err.message, **err.extra})
            await context.abort(err.code, err.message)
        namespace = node_namespace(first.node)
        if peer_identity is not None:
            if namespace is None:
                namespace = peer_identity.namespace  # the certificate says it
            elif namespace != peer_identity.namespace:
                log.warning("stream refused: namespace not the client certificate's",
                            extra={"node": first.node.id, "peer": context.peer(), "namespace": namespace,
                                   "identity": peer_identity.spiffe_id})
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, (
                    f"node.metadata.namespace {namespace!r} is not the namespace of the client "
                    f"certificate ({peer_identity.spiffe_id}): a sidecar only gets its own "
                    "namespace's config"))
        if namespace is None:
            log.warning("stream refused: node without namespace",
                        extra={"node": first.node.id, "peer": context.peer()})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MISSING_NAMESPACE)
        assert namespace is not None
        stream = Stream(next(self._ids), first.node, namespace, delta, context.peer())
        self.streams[stream.id] = stream
        mode = stream.mode
        self.metrics.connected_proxies.labels(mode).inc()
        self.cache.watch(namespace, stream.wake.set)
        extra = {"stream": stream.id, "node": stream.node_id, "namespace": namespace, "mode": mode,
                 "peer": stream.peer}
        if peer_identity is not None:
            extra["identity"] = peer_identity.spiffe_id
        log.info("stream open", extra=extra)
        bucket = TokenBucket(self.limits.max_requests_per_second, self.limits.burst)
        bucket.take()
        stream.on_request(first)
        stream.wake.set()
        reader = asyncio.create_task(self._read(stream, requests, bucket))
        try:
            await self._write(stream, context)
            if stream.refused is not None:
                await context.abort(*stream.refused)
        finally:
            reader.cancel()
            self.cache.unwatch(namespace, stream.wake.set)
            self.streams.pop(stream.id, None)
            self.metrics.connected_proxies.labels(mode).dec()
            log.info("stream closed", extra={"stream": stream.id, "node": stream.node_id,
                                             "namespace": namespace, "mode": mode})

    def _check_limits(self, stream: Stream, request: Any, bucket: TokenBucket) -> tuple[grpc.StatusCode, str] | None:
        limits = self.limits
        ctx = {"stream": stream.id, "node": stream.node_id, "namespace": stream.namespace,
               "peer": stream.peer}
        if not bucket.take():
            log.warning("limit hit: request rate, stream ended",
                        extra={"limit": "max_requests_per_second",
                               "max_requests_per_second": limits.max_requests_per_second,
                               "burst": limits.burst, **ctx})
            return grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"more than {limits.max_requests_per_second:g} requests per second on one ADS stream "
                f"(burst {limits.burst}; --max-requests-per-second)")
        if (limits.max_types_per_stream and request.type_url not in stream.types
                and len(stream.types) >= limits.max_types_per_stream):
            log.warning("limit hit: type URLs per stream, stream ended",
                        extra={"limit": "max_types_per_stream",
                               "max_types_per_stream": limits.max_types_per_stream, **ctx})
            return grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"more than {limits.max_types_per_stream} type URLs on one ADS stream")
        return None

    async def _read(self, stream: Stream, requests: AsyncIterator[Any], bucket: TokenBucket) -> None:
        try:
            async for request in requests:
                refused = self._check_limits(stream, request, bucket)
                if refused is not None:
                    stream.refused = refused
                    break
                if stream.on_request(request):
                    stream.wake.set()
        except RequestRejected as err:
            log.warning(err.event, extra={"stream": stream.id, "node": stream.node_id,
                                          "namespace": stream.namespace, "peer": stream.peer,
                                          "error": err.message, **err.extra})
            stream.refused = err.code, err.message
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
            pass
        except Exception:
            log.exception("reading stream failed", extra={"stream": stream.id})
        finally:
            stream.closed = True
            stream.wake.set()

    async def _write(self, stream: Stream, context: grpc.aio.ServicerContext) -> None:
        while True:
            await stream.wake.wait()
            stream.wake.clear()
            if stream.closed or self._closing:
                return
            for type_url in stream.nacks:
                self.metrics.nacks.labels(short(type_url)).inc()
            stream.nacks.clear()
            snapshot = self.cache.get_snapshot(stream.namespace)
            if snapshot is None:
                self.cache.request(stream.namespace)
                continue
            changed_at = self.cache.set_at(stream.namespace)
            for type_url, body, first in stream.responses(snapshot):
                try:
                    await context.write(body)
                except Exception as err:  # the call ended; a blocked write of a stuck client
                    # that goes away fails with grpc's internal ExecuteBatchError
                    log.info("stream write failed", extra={"stream": stream.id, "error": repr(err)})
                    return
                label = short(type_url)
                self.metrics.pushes.labels(label).inc()
                if not first:
                    self.metrics.push_latency.labels(label).observe(
                        max(0.0, time.monotonic() - changed_at))
                if stream.closed or self._closing:
                    return
