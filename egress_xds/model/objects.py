"""Pydantic models of the objects egress-xds reads.

In: one decoded YAML/JSON document (a dict). Out: a frozen, validated object whose fields
follow the Kubernetes field names, so a validation error's location reads like the manifest
(``spec.networks[0].except``). Called by ``model.load``; the resolver reads these objects.

Rules enforced here are the per-object ones of egress-semantics.md §1 (CIDR syntax, except
ranges, non-empty ``networks``, hostname syntax). Rules that need other objects (parents,
backends, conflicts) are statuses computed by ``resolve``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

POLICY_GROUP = "policy.linkerd.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_NAMESPACE_RE = re.compile(rf"^{_DNS_LABEL}$")
_HOSTNAME_RE = re.compile(rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")


def _show(value: str) -> str:
    """``repr(value)`` for an error message, cut short: a rejected value may be megabytes."""
    return repr(value) if len(value) <= 100 else f"{value[:100]!r}... ({len(value)} characters)"


def parse_network(value: Any) -> IPNetwork:
    """A CIDR or a bare IP; host bits may be set (``192.168.0.1/16`` is ``192.168.0.0/16``)."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a CIDR string, got {type(value).__name__}")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{_show(value)} is not a valid IP network or address") from None


def _check_name(value: str) -> str:
    if len(value) > 253 or not _NAME_RE.match(value):
        raise ValueError(f"{_show(value)} is not a valid name (lowercase RFC 1123 subdomain, at most 253 characters)")
    return value


def _check_namespace(value: str) -> str:
    if len(value) > 63 or not _NAMESPACE_RE.match(value):
        raise ValueError(f"{_show(value)} is not a valid namespace (lowercase RFC 1123 label, at most 63 characters)")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def normalize_hostname(value: str) -> str:
    """Gateway API hostnames compare case-insensitively and ignore a trailing dot."""
    host = value.strip().lower().rstrip(".")
    if len(host) > 253 or not _HOSTNAME_RE.match(host) or _is_ip(host):
        raise ValueError(
            f"{_show(value)} is not a valid hostname (a DNS name, optionally with a leading '*.'; IPs and a bare '*' are not allowed)"
        )
    return host


def _check_header_name(value: str) -> str:
    if not _HEADER_NAME_RE.match(value):
        raise ValueError(f"{_show(value)} is not a valid HTTP header name")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Namespace = Annotated[str, AfterValidator(_check_namespace)]
Network = Annotated[IPNetwork, BeforeValidator(parse_network)]
Hostname = Annotated[str, AfterValidator(normalize_hostname)]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ObjectMeta(_Frozen):
    name: Name
    namespace: Namespace = "default"
    creationTimestamp: datetime | None = None
    generation: int | None = None
    resourceVersion: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class ObjectKey(NamedTuple):
    """Identity of an object: (kind, namespace, name). Sorts deterministically."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class TopLevel(_Frozen):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    # The manifest file the object came from ("" when it came from the Kubernetes API).
    _source_file: str = PrivateAttr(default="")

    @property
    def source_file(self) -> str:
        return self._source_file

    @functools.cached_property
    def key(self) -> ObjectKey:
        """Computed once: the object is frozen, and a rescan of a big file asks each object
        for its key several times (merge, duplicate counts, reuse)."""
        return ObjectKey(self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def ref(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


# ---------------------------------------------------------------------------------------
# EgressNetwork (policy.linkerd.io/v1alpha1)


class EgressNetworkEntry(_Frozen):
    cidr: Network
    except_: tuple[Network, ...] = Field(default=(), alias="except")

    @field_validator("except_")
    @classmethod
    def _excepts_inside_cidr(cls, excepts: tuple[IPNetwork, ...], info: ValidationInfo) -> tuple[IPNetwork, ...]:
        cidr = info.data.get("cidr")
        if cidr is None:
            return excepts
        for exc in excepts:
            if exc.version != cidr.version:
                raise ValueError(f"cidr {cidr} and exception {exc} mix IPv4 and IPv6")
            if exc.supernet_of(cidr):  # type: ignore[arg-type]
                raise ValueError(f"cidr {cidr} is completely negated by exception {exc}")
            if not exc.subnet_of(cidr):  # type: ignore[arg-type]
                raise ValueError(f"cidr {cidr} does not include exception {exc}")
        return excepts


class EgressNetworkSpec(_Frozen):
    trafficPolicy: Literal["Allow", "Deny"]
    networks: tuple[EgressNetworkEntry, ...] | None = None

    @field_validator("networks")
    @classmethod
    def _not_empty(cls, networks: tuple[EgressNetworkEntry, ...] | None) -> tuple[EgressNetworkEntry, ...] | None:
        if networks is not None and len(networks) == 0:
            raise ValueError("at least one network must be specified")
        return networks


OPAQUE_PORTS_ANNOTATION = "config.linkerd.io/opaque-ports"


def parse_port_list(value: str) -> frozenset[int]:
    """``"25,587,4000-4010"`` -> the set of ports. Raises ValueError naming the bad item."""
    ports: set[int] = set()
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        low, sep, high = item.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise ValueError(f"{_show(item)} is not a port or a port range") from None
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"{_show(item)} is not a port or a port range within 1-65535")
        ports.update(range(first, last + 1))
    return frozenset(ports)


class EgressNetwork(TopLevel):
    kind: Literal["EgressNetwork"]
    spec: EgressNetworkSpec

    @field_validator("metadata")
    @classmethod
    def _opaque_ports_parse(cls, metadata: ObjectMeta) -> ObjectMeta:
        value = metadata.annotations.get(OPAQUE_PORTS_ANNOTATION)
        if value is not None:
            try:
                parse_port_list(value)
            except ValueError as err:
                raise ValueError(f"annotation {OPAQUE_PORTS_ANNOTATION}: {err}") from None
        return metadata

    @property
    def opaque_ports(self) -> frozenset[int] | None:
        """Ports named by the opaque-ports annotation, or None when it is absent."""
        value = self.metadata.annotations.get(OPAQUE_PORTS_ANNOTATION)
        return None if value is None else parse_port_list(value)


# ---------------------------------------------------------------------------------------
# Gateway API routes (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute)


class ParentRef(_Frozen):
    group: str | None = GATEWAY_GROUP
    kind: str | None = "Gateway"
    namespace: Namespace | None = None
    name: Name
    sectionName: str | None = None
    port: Port | None = None

    @property
    def is_egress_network(self) -> bool:
        return self.group == POLICY_GROUP and self.kind == "EgressNetwork"

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class BackendRef(_Frozen):
    group: str = ""
    kind: str = "Service"
    name: Name
    namespace: Namespace | None = None
    port: Port | None = None
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    filters: tuple[dict[str, Any], ...] = ()


class HTTPPathMatch(_Frozen):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"

    @field_validator("value")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") != "RegularExpression" and not value.startswith("/"):
            raise ValueError(f"path {_show(value)} must start with '/'")
        if len(value) > 1024:
            raise ValueError("path is longer than 1024 characters")
        return value


class HeaderMatch(_Frozen):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: HeaderName
    value: str


class QueryParamMatch(_Frozen):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: Annotated[str, Field(min_length=1, max_length=256)]
    value: str


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class HTTPRouteMatch(_Frozen):
    path: HTTPPathMatch = HTTPPathMatch()
    headers: tuple[HeaderMatch, ...] = ()
    queryParams: tuple[QueryParamMatch, ...] = ()
    method: HTTPMethod | None = None


class HeaderValue(_Frozen):
    name: HeaderName
    value: str


class HeaderModifier(_Frozen):
    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[HeaderName, ...] = ()


class PathModifier(_Frozen):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replaceFullPath: str | None = None
    replacePrefixMatch: str | None = None


class RequestRedirect(_Frozen):
    scheme: Literal["http", "https"] | None = None
    hostname: Hostname | None = None
    path: PathModifier | None = None
    port: Port | None = None
    statusCode: Literal[301, 302, 303, 307, 308] = 302


class URLRewrite(_Frozen):
    hostname: Hostname | None = None
    path: PathModifier | None = None


class HTTPRouteFilter(_Frozen):
    """A rule filter. ``type`` stays a free string: unsupported types become a route status."""

    type: str
    requestHeaderModifier: HeaderModifier | None = None
    responseHeaderModifier: HeaderModifier | None = None
    requestRedirect: RequestRedirect | None = None
    urlRewrite: URLRewrite | None = None


class HTTPRouteRule(_Frozen):
    matches: tuple[HTTPRouteMatch, ...] = (HTTPRouteMatch(),)
    filters: tuple[HTTPRouteFilter, ...] = ()
    backendRefs: tuple[BackendRef, ...] = ()

    @field_validator("matches")
    @classmethod
    def _default_match(cls, matches: tuple[HTTPRouteMatch, ...]) -> tuple[HTTPRouteMatch, ...]:
        return matches or (HTTPRouteMatch(),)


class HTTPRouteSpec(_Frozen):
    parentRefs: tuple[ParentRef, ...] = ()
    hostnames: tuple[Hostname, ...] = ()
    rules: tuple[HTTPRouteRule, ...] = (HTTPRouteRule(),)


class GRPCMethodMatch(_Frozen):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None

    @field_validator("method")
    @classmethod
    def _one_of(cls, method: str | None, info: ValidationInfo) -> str | None:
        if method is None and info.data.get("service") is None:
            raise ValueError("one of service or method must be set")
        return method


class GRPCRouteMatch(_Frozen):
    method: GRPCMethodMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()


class GRPCRouteRule(_Frozen):
    matches: tuple[GRPCRouteMatch, ...] = (GRPCRouteMatch(),)
    filters: tuple[HTTPRouteFilter, ...] = ()
    backendRefs: tuple[BackendRef, ...] = ()

    @field_validator("matches")
    @classmethod
    def _default_match(cls, matches: tuple[GRPCRouteMatch, ...]) -> tuple[GRPCRouteMatch, ...]:
        return matches or (GRPCRouteMatch(),)


class GRPCRouteSpec(_Frozen):
    parentRefs: tuple[ParentRef, ...] = ()
    hostnames: tuple[Hostname, ...] = ()
    rules: tuple[GRPCRouteRule, ...] = (GRPCRouteRule(),)


class StreamRouteRule(_Frozen):
    backendRefs: tuple[BackendRef, ...] = ()


class TLSRouteSpec(_Frozen):
    parentRefs: tuple[ParentRef, ...] = ()
    hostnames: tuple[Hostname, ...] = ()
    rules: tuple[StreamRouteRule, ...] = ()


class TCPRouteSpec(_Frozen):
    parentRefs: tuple[ParentRef, ...] = ()
    rules: tuple[StreamRouteRule, ...] = ()


class HTTPRoute(TopLevel):
    kind: Literal["HTTPRoute"]
    spec: HTTPRouteSpec


class GRPCRoute(TopLevel):
    kind: Literal["GRPCRoute"]
    spec: GRPCRouteSpec


class TLSRoute(TopLevel):
    kind: Literal["TLSRoute"]
    spec: TLSRouteSpec


class TCPRoute(TopLevel):
    kind: Literal["TCPRoute"]
    spec: TCPRouteSpec


Route = HTTPRoute | GRPCRoute | TLSRoute | TCPRoute

# Precedence of route kinds on one (EgressNetwork, port): lower number wins (spec §3).
ROUTE_KIND_RANK: dict[str, int] = {"GRPCRoute": 0, "HTTPRoute": 1, "TLSRoute": 2, "TCPRoute": 3}


# ---------------------------------------------------------------------------------------
# Service (v1), only as a backendRef target


class ServicePort(_Frozen):
    name: str | None = None
    port: Port
    protocol: str = "TCP"


class ServiceSpec(_Frozen):
    clusterIP: str | None = None
    ports: tuple[ServicePort, ...] = ()

    @field_validator("clusterIP")
    @classmethod
    def _ip_or_none(cls, value: str | None) -> str | None:
        if value is None or value == "" or value == "None":
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{_show(value)} is not an IP address") from None


class Service(TopLevel):
    kind: Literal["Service"]
    spec: ServiceSpec = ServiceSpec()


# (group, kind) -> model. The group is the part of apiVersion before '/'; "" for core.
SUPPORTED: dict[tuple[str, str], type[TopLevel]] = {
    (POLICY_GROUP, "EgressNetwork"): EgressNetwork,
    (GATEWAY_GROUP, "HTTPRoute"): HTTPRoute,
    (POLICY_GROUP, "HTTPRoute"): HTTPRoute,
    (GATEWAY_GROUP, "GRPCRoute"): GRPCRoute,
    (GATEWAY_GROUP, "TLSRoute"): TLSRoute,
    (GATEWAY_GROUP, "TCPRoute"): TCPRoute,
    ("", "Service"): Service,
}

SUPPORTED_VERSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    (POLICY_GROUP, "EgressNetwork"): ("v1alpha1",),
    (GATEWAY_GROUP, "HTTPRoute"): ("v1", "v1beta1"),
    (POLICY_GROUP, "HTTPRoute"): ("v1beta3",),
    (GATEWAY_GROUP, "GRPCRoute"): ("v1",),
    (GATEWAY_GROUP, "TLSRoute"): ("v1alpha2",),
    (GATEWAY_GROUP, "TCPRoute"): ("v1alpha2",),
    ("", "Service"): ("v1",),
}
