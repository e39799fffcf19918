"""The Envoy-free intermediate representation: what one client namespace's sidecars enforce.

In: produced by ``resolve.translate_namespace`` from validated objects.
Out: read by the Envoy builders (``egress_xds.envoy``) and by ``resolve.explain``, so the
config Envoy receives and the verdict ``explain`` prints come from the same value.
Everything here is a frozen dataclass of plain values, ordered deterministically.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What governs a destination: an EgressNetwork, the egress fallback (outside the cluster
# networks, no EgressNetwork matched: forward) or the cluster itself (inside the cluster
# networks, not egress: forward unchanged).
GovernorKind = Literal["egress-network", "fallback", "cluster"]

# Route label used in stats, access logs and explain when no user route matched.
DEFAULT_ALLOW = "default-allow"
DEFAULT_DENY = "default-deny"

DENY_BODY = "traffic not allowed"
DENIED_BY_HEADER = "x-egress-denied-by"


@dataclass(frozen=True, order=True)
class Governor:
    """Who decides for a destination address."""

    kind: GovernorKind
    namespace: str = ""
    name: str = ""
    allow: bool = True  # trafficPolicy; the fallback and the cluster always forward
    # ``ns/name`` for an EgressNetwork, else ``fallback`` or ``cluster``. Computed once, with
    # the hash: governors key most of the builders' memo tables, hundreds of thousands of
    # lookups in a big world.
    label: str = field(init=False, compare=False, repr=False)
    _hash: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.namespace}/{self.name}" if self.kind == "egress-network" else self.kind)
        object.__setattr__(self, "_hash", hash((self.kind, self.namespace, self.name, self.allow)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Governor], tuple[str, str, str, bool]]:
        return Governor, (self.kind, self.namespace, self.name, self.allow)  # string hashes differ per process

    @property
    def default_route(self) -> str:
        return DEFAULT_ALLOW if self.allow else DEFAULT_DENY


@dataclass(frozen=True, order=True)
class Destination:
    """One prefix of the address partition: addresses whose longest matching prefix in the
    partition is ``network`` are governed by ``governor``."""

    network: IPNetwork
    governor: Governor


@dataclass(frozen=True)
class RouteRef:
    kind: str  # HTTPRoute | GRPCRoute | TLSRoute | TCPRoute
    namespace: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


BackendKind = Literal["passthrough", "service", "invalid"]


@dataclass(frozen=True)
class Backend:
    """Where a share of matched traffic goes.

    ``passthrough``: the original destination IP and port (no backendRef, or the parent
    EgressNetwork). ``service``: a Service's clusterIP:port. ``invalid``: a backendRef that
    cannot be resolved; HTTP answers 500, gRPC UNKNOWN, TLS/TCP close. ``reason`` says why.
    """

    kind: BackendKind
    weight: int = 1
    namespace: str = ""
    name: str = ""
    address: str = ""  # Service clusterIP
    port: int = 0  # Service port
    reason: str = ""

    @property
    def cluster(self) -> str:
        """Name of the Envoy cluster that serves this backend ('' for invalid)."""
        if self.kind == "passthrough":
            return PASSTHROUGH_CLUSTER
        if self.kind == "service":
            return f"service|{self.namespace}|{self.name}|{self.port}"
        return ""


PASSTHROUGH_CLUSTER = "egress-passthrough"
DENY_CLUSTER = "egress-deny"
INVALID_BACKEND_CLUSTER = "egress-invalid-backend"


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str
    regex: bool = False


@dataclass(frozen=True)
class HttpMatch:
    """One Gateway API match. ``path_kind`` None means any path."""

    # exact; prefix = Gateway API PathPrefix (element-wise); raw-prefix = plain string prefix
    # (gRPC service matches); regex = RE2, whole path.
    path_kind: Literal["exact", "prefix", "raw-prefix", "regex"] | None = None
    path: str = ""
    method: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class HeaderEdits:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    """RequestRedirect filter: answered by the proxy with a 3xx."""

    status: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix_path: str | None = None


@dataclass(frozen=True)
class Rewrite:
    """URLRewrite filter."""

    hostname: str | None = None
    full_path: str | None = None
    prefix_path: str | None = None


@dataclass(frozen=True)
class HttpRule:
    """One (route, rule, match) entry in precedence order inside a virtual host."""

    route: RouteRef
    rule_index: int
    match_index: int
    match: HttpMatch
    backends: tuple[Backend, ...]
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None

    @property
    def name(self) -> str:
        """The Envoy route name, which access logs print: explain's ``Kind ns/name`` label
        (also what TCP access logs print) followed by the rule and match it came from."""
        return f"{self.route.label} rules[{self.rule_index}].matches[{self.match_index}]"


@dataclass(frozen=True)
class VirtualHost:
    """Requests whose Host matches ``domain`` (exact, ``*.suffix`` or ``*``) try ``rules`` in
    order, then the default route of the policy."""

    domain: str
    rules: tuple[HttpRule, ...]


@dataclass(frozen=True)
class TlsRoute:
    """A TLSRoute programmed for a set of SNI names (empty = any TLS connection)."""

    route: RouteRef
    server_names: tuple[str, ...]
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class TcpRoute:
    route: RouteRef
    backends: tuple[Backend, ...]


Protocol = Literal["http", "grpc", "tls", "tcp", "opaque"]


@dataclass(frozen=True)
class PortPolicy:
    """What a governor does with connections on one port (``port`` None: any other port).

    ``http``: plaintext HTTP/1 and h2c go through ``virtual_hosts`` then the default route;
    other bytes get the default opaque action. ``grpc``: the same with gRPC semantics.
    ``tls``: TLS is routed by SNI through ``tls_routes``; the rest gets the default.
    ``tcp``: everything goes to ``tcp_route``. ``opaque``: everything gets the default.
    The default is ``governor.allow``: forward to the original destination, or deny.
    """

    governor: Governor
    port: int | None
    protocol: Protocol
    virtual_hosts: tuple[VirtualHost, ...] = ()
    tls_routes: tuple[TlsRoute, ...] = ()
    tcp_route: TcpRoute | None = None

    @property
    def port_label(self) -> str:
        return "any" if self.port is None else str(self.port)

    def same_behaviour(self, other: PortPolicy) -> bool:
        """True when both would make Envoy act identically (ignoring which port)."""
        return (self.governor, self.protocol, self.virtual_hosts, self.tls_routes, self.tcp_route) == (
            other.governor, other.protocol, other.virtual_hosts, other.tls_routes, other.tcp_route)


@dataclass(frozen=True)
class NamespaceEgress:
    """Everything a sidecar in ``namespace`` enforces.

    ``destinations``: the address partition, one entry per prefix, read with longest-prefix
    matching (it always contains ``0.0.0.0/0`` and ``::/0``).
    ``ports``: the ports that need their own behaviour (ports with routes, opaque ports).
    ``policies``: for every governor in ``destinations``, a policy for each port in
    ``ports`` and one for ``None`` (every other port).
    """

    namespace: str
    listener_port: int
    listener_addresses: tuple[str, ...]
    detect_timeout_ms: int
    destinations: tuple[Destination, ...]
    ports: tuple[int, ...]
    policies: tuple[PortPolicy, ...]
    # Ports on which the listener skips protocol detection (opaque for every
    # EgressNetwork): connections there are opaque bytes, whatever they carry.
    no_detect_ports: tuple[int, ...] = ()
    services: tuple[Backend, ...] = field(default=())

    def policy(self, governor: Governor, port: int | None) -> PortPolicy:
        effective = port if port in self.ports else None
        return self._policy_index[(governor, effective)]

    @functools.cached_property
    def _policy_index(self) -> dict[tuple[Governor, int | None], PortPolicy]:
        return {(p.governor, p.port): p for p in self.policies}

    def governor_for(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Governor:
        best: Destination | None = None
        for dest in self.destinations:
            if dest.network.version == address.version and address in dest.network:
                if best is None or dest.network.prefixlen > best.network.prefixlen:
                    best = dest
        assert best is not None, "the partition always covers the whole address space"
        return best.governor
