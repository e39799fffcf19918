"""The ``outbound`` listener: filter chains from the address partition crossed with ports.

In: ``ir.NamespaceEgress``. Out: one ``Listener`` (IPv4 and IPv6) whose filter chains make
Envoy's matching sieve reproduce the IR exactly.

Envoy matches destination port first, then destination IP (longest prefix), then SNI, then
transport protocol, then application protocol, and never backtracks: once a chain names
port 443, connections to port 443 only ever see chains naming port 443. So every port with
its own behaviour (``egress.ports``) gets a full copy of the partition, and the port-less
chains serve every other port. Within a (port, prefix set) the chains are:

- opaque: one chain, the default action;
- tcp: one chain, the TCPRoute's backends;
- http/grpc: plaintext HTTP (raw_buffer + http/1.0, http/1.1, h2c) -> connection manager
  with the policy's routes; other raw bytes -> default; anything else (TLS) -> default;
- tls: one chain per SNI set -> its TLSRoute; TLS without a matching name -> the TLSRoute
  without hostnames if any; everything else -> default.

A chain for the outbound port itself closes connections (a direct connection to the
listener would otherwise loop), and the default chain closes too: with both roots on every
port, only a bug could reach it, and failing closed is the safe side.

How it is built: a policy's chains are serialized once (``policy_chains``) and shared by
every namespace with the same policy object; the access logs name the client namespace by
reading the listener's metadata, so no chain depends on it. A namespace's listener is those
chains, its metadata and the common rest, joined as bytes and parsed once. Packed filter
configs are byte for byte what upb writes for the whole message
(``tests/unit/test_envoy_parts.py``).
Called by ``egress_xds.envoy.build_resources``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import duration_pb2

from egress_xds import ir
from egress_xds.envoy.common import (
    NAMESPACE_METADATA_FILTER,
    NAMESPACE_METADATA_KEY,
    access_log_bytes,
    field_bytes,
    hcm_stat_prefix,
    pack,
    tcp_stat_prefix,
    type_url,
    varint,
)
from egress_xds.envoy.route import route_config_name

LISTENER_NAME = "outbound"
HTTP_PROTOCOLS = ("http/1.0", "http/1.1", "h2c")
INVALID_BACKEND_BODY = "invalid backend: a backendRef of this route cannot be resolved (see the route's status)"


@functools.lru_cache(maxsize=65536)
def _cidr(network: ir.IPNetwork) -> address_pb2.CidrRange:
    return address_pb2.CidrRange(address_prefix=str(network.network_address), prefix_len={"value": network.prefixlen})


_ADS = config_source_pb2.ConfigSource(ads={}, resource_api_version=config_source_pb2.V3)
_TCP_PROXY_URL = type_url(tcp_proxy_pb2.TcpProxy)
_HCM_URL = type_url(hcm_pb2.HttpConnectionManager)

# Chains are assembled from serialized parts (``common.field_bytes``): a chain is its
# match, its one network filter and its name, in this field order; the listener gets them
# all in one parse. Building ~60,000 chain messages one by one for a 1,000-namespace world
# cost more than the rest of the translation.
_TCP_ACCESS_LOG = tcp_proxy_pb2.TcpProxy.DESCRIPTOR.fields_by_name["access_log"].number
_HCM_ACCESS_LOG = hcm_pb2.HttpConnectionManager.DESCRIPTOR.fields_by_name["access_log"].number
_CHAIN_FIELDS = lc.FilterChain.DESCRIPTOR.fields_by_name
_CHAIN_MATCH = _CHAIN_FIELDS["filter_chain_match"].number
_CHAIN_FILTERS = _CHAIN_FIELDS["filters"].number
_CHAIN_NAME = _CHAIN_FIELDS["name"].number
_FILTER_NAME = lc.Filter.DESCRIPTOR.fields_by_name["name"].number
_FILTER_CONFIG = lc.Filter.DESCRIPTOR.fields_by_name["typed_config"].number
_LISTENER_CHAINS = listener_pb2.Listener.DESCRIPTOR.fields_by_name["filter_chains"].number
assert _CHAIN_MATCH < _CHAIN_FILTERS < _CHAIN_NAME and _FILTER_NAME < _FILTER_CONFIG
_CHAIN_FILTERS_TAG = varint(_CHAIN_FILTERS << 3 | 2)
_FILTER_CONFIG_TAG = varint(_FILTER_CONFIG << 3 | 2)
_ANY_VALUE_TAG = varint(2 << 3 | 2)
_LISTENER_CHAINS_TAG = varint(_LISTENER_CHAINS << 3 | 2)
_DEFAULT_CHAIN_TAG = varint(listener_pb2.Listener.DESCRIPTOR.fields_by_name["default_filter_chain"].number << 3 | 2)
# kind -> (the network filter's name field, its typed_config's type_url field)
_FILTERS = {
    "tcp": (field_bytes(_FILTER_NAME, b"envoy.filters.network.tcp_proxy"), field_bytes(1, _TCP_PROXY_URL.encode())),
    "http": (field_bytes(_FILTER_NAME, b"envoy.filters.network.http_connection_manager"),
             field_bytes(1, _HCM_URL.encode())),
}


@functools.lru_cache(maxsize=65536)
def _tcp_proxy_parts(stat_prefix: str, backends: tuple[ir.Backend, ...]) -> tuple[bytes, bytes]:
    """A TCP proxy's bytes around its access log: (stat_prefix and cluster, weighted
    clusters), shared by every namespace with the same governor, port and route."""
    head = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    tail = tcp_proxy_pb2.TcpProxy()
    live = [b for b in backends if b.weight > 0]
    valid = [b for b in live if b.kind != "invalid"]
    if not valid:
        head.cluster = ir.DENY_CLUSTER
    elif len(live) == 1:
        head.cluster = live[0].cluster
    else:
        for b in live:
            tail.weighted_clusters.clusters.add(name=b.cluster or ir.DENY_CLUSTER, weight=b.weight)
    return head.SerializeToString(deterministic=True), tail.SerializeToString(deterministic=True)


def _default_backends(governor: ir.Governor) -> tuple[ir.Backend, ...]:
    return (ir.Backend("passthrough"),) if governor.allow else (ir.Backend("invalid"),)


@functools.cache
def _connection_manager_constants() -> tuple[bytes, bytes]:
    """What every connection manager has, as bytes: (its HTTP filters, its fields numbered
    above access_log). Fields are written in number order: codec_type, stat_prefix, rds,
    http_filters, access_log, local_reply_config, strip_any_host_port, strip_trailing_host_dot."""
    filters = hcm_pb2.HttpConnectionManager(
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))])
    tail = hcm_pb2.HttpConnectionManager(
        strip_any_host_port=True,
        strip_trailing_host_dot=True,
        local_reply_config=hcm_pb2.LocalReplyConfig(
            mappers=[
                hcm_pb2.ResponseMapper(
                    filter={"response_flag_filter": {"flags": ["UH"]}},
                    status_code={"value": 500},
                    body={"inline_string": INVALID_BACKEND_BODY},
                )
            ]
        ),
    )
    return filters.SerializeToString(deterministic=True), tail.SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=65536)
def _connection_manager_head(governor: ir.Governor, port_label: str, route_config: str) -> bytes:
    """A connection manager's bytes before its access log, shared by every namespace with
    the same governor, port and route config name."""
    head = hcm_pb2.HttpConnectionManager(
        stat_prefix=hcm_stat_prefix(governor, port_label),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(route_config_name=route_config, config_source=_ADS),
    )
    return head.SerializeToString(deterministic=True) + _connection_manager_constants()[0]


# (prefixes key, port, transport, application protocols, server names) -> chain match,
# shared by every namespace whose governor has the same prefixes (all namespaces on the
# global view). The key names the prefixes as text: hashing and comparing ipaddress objects
# on every lookup cost more than the rest of the listener.
_MATCHES: dict[tuple[object, ...], bytes] = {}
_RANGES: dict[str, bytes] = {}  # prefixes key -> the prefix_ranges fields, as bytes
_MATCHES_MAX = 65_536


def forget_matches() -> None:
    _MATCHES.clear()
    _RANGES.clear()


# Network -> its text, for ``prefixes_key``: formatting addresses costs more than hashing.
_network_text = functools.lru_cache(maxsize=65536)(str)


def prefixes_key(prefixes: Sequence[ir.IPNetwork]) -> str:
    return ",".join(map(_network_text, prefixes))


def _match(prefixes: Sequence[ir.IPNetwork], key: str, port: int | None, transport: str = "",
           application_protocols: tuple[str, ...] = (), server_names: tuple[str, ...] = ()) -> bytes:
    """A chain's ``filter_chain_match`` field, as bytes: the prefix ranges (one encoding
    per prefix set, shared by every port and variant) joined to the rest of the match."""
    cache_key = (key, port, transport, application_protocols, server_names)
    found = _MATCHES.get(cache_key)
    if found is None:
        ranges = _RANGES.get(key)
        if ranges is None:
            ranges = lc.FilterChainMatch(prefix_ranges=[_cidr(n) for n in prefixes]).SerializeToString(
                deterministic=True)
            if len(_RANGES) >= _MATCHES_MAX:
                _RANGES.clear()
            _RANGES[key] = ranges
        found = field_bytes(_CHAIN_MATCH, ranges + _match_rest(port, transport, application_protocols, server_names))
        if len(_MATCHES) >= _MATCHES_MAX:
            _MATCHES.clear()
        _MATCHES[cache_key] = found
    return found


@functools.lru_cache(maxsize=4096)
def _match_rest(port: int | None, transport: str, application_protocols: tuple[str, ...],
                server_names: tuple[str, ...]) -> bytes:
    """A match's fields other than its prefix ranges, as bytes."""
    match = lc.FilterChainMatch(transport_protocol=transport, application_protocols=application_protocols,
                                server_names=server_names)
    if port is not None:
        match.destination_port.value = port
    return match.SerializeToString(deterministic=True)


def policy_chains(policy: ir.PortPolicy, prefixes: Sequence[ir.IPNetwork], key: str) -> bytes:
    """The chains of one governor on one port, as the listener's ``filter_chains`` fields;
    ``key`` is ``prefixes_key(prefixes)``. Nothing in them names the client namespace, so
    every namespace with the same policy object and prefixes shares them."""
    port = policy.port
    governor, port_label = policy.governor, policy.port_label
    label = governor.label
    chains: list[bytes] = []

    def chain(variant: str, match: bytes, config: bytes, kind: str = "tcp") -> None:
        chains.append(_chain_field(_chain_name(port_label, label, variant), match, kind, config))

    def match(transport: str = "", application_protocols: tuple[str, ...] = (),
              server_names: tuple[str, ...] = ()) -> bytes:
        return _match(prefixes, key, port, transport, application_protocols, server_names)

    def tcp_proxy(route: ir.RouteRef | None, backends: tuple[ir.Backend, ...], log_route: str) -> bytes:
        head, tail = _tcp_proxy_parts(tcp_stat_prefix(governor, port_label, route), backends)
        return head + _access_log_field("tcp", label, log_route) + tail

    default = governor.default_route
    default_proxy = tcp_proxy(None, _default_backends(governor), default)
    if policy.protocol == "opaque":
        chain("default", match(), default_proxy)
    elif policy.protocol == "tcp":
        assert policy.tcp_route is not None
        tcp = policy.tcp_route
        chain("tcp", match(), tcp_proxy(tcp.route, tcp.backends, tcp.route.label))
    elif policy.protocol in ("http", "grpc"):
        manager = (_connection_manager_head(governor, port_label, route_config_name(policy))
                   + _access_log_field("http", label, None) + _connection_manager_constants()[1])
        chain("http", match("raw_buffer", HTTP_PROTOCOLS), manager, "http")
        chain("raw", match("raw_buffer"), default_proxy)
        chain("default", match(), default_proxy)
    else:
        for tls in policy.tls_routes:
            proxy = tcp_proxy(tls.route, tls.backends, tls.route.label)
            if tls.server_names:
                chain(f"sni:{tls.route.namespace}/{tls.route.name}", match(server_names=tuple(tls.server_names)),
                      proxy)
            else:
                chain("tls", match("tls"), proxy)
        chain("default", match(), default_proxy)
    return b"".join(chains)


# id(policy) and its prefixes key -> (policy, its chains), for one world (kept by the
# caller): the entry holds the policy, so its id is not reused while the entry lives.
SharedChains = dict[tuple[int, str], tuple[ir.PortPolicy, bytes]]


@functools.lru_cache(maxsize=65536)
def _access_log_field(kind: str, egress_network: str, route: str | None) -> bytes:
    """The filter's access_log field, serialized: a TCP proxy's or a connection manager's."""
    if kind == "tcp":
        return field_bytes(_TCP_ACCESS_LOG, access_log_bytes(egress_network, route, "tcp"))
    return field_bytes(_HCM_ACCESS_LOG, access_log_bytes(egress_network, None, "http"))


def _chain_field(name: bytes, match: bytes, kind: str, config: bytes, tag: bytes = _LISTENER_CHAINS_TAG) -> bytes:
    """One ``filter_chains`` field (or the field of ``tag``): the chain's match, its one
    network filter (``kind``'s, with ``config`` as its typed_config value) and its name."""
    filter_name, url = _FILTERS[kind]
    packed = url + _ANY_VALUE_TAG + varint(len(config)) + config
    network_filter = filter_name + _FILTER_CONFIG_TAG + varint(len(packed)) + packed
    filters = _CHAIN_FILTERS_TAG + varint(len(network_filter)) + network_filter
    return b"".join((tag, varint(len(match) + len(filters) + len(name)), match, filters, name))


def _port_ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for port in sorted(set(ports)):
        if ranges and ranges[-1][1] == port:
            ranges[-1] = (ranges[-1][0], port + 1)
        else:
            ranges.append((port, port + 1))
    return ranges


def _skip_detection(ports: Iterable[int]) -> lc.ListenerFilterChainMatchPredicate:
    """Inspectors wait for the client's first bytes: skip them where no chain needs them, so
    server-speaks-first protocols (SMTP, MySQL...) on opaque ports are not delayed."""
    rules = [lc.ListenerFilterChainMatchPredicate(destination_port_range={"start": a, "end": b})
             for a, b in _port_ranges(ports)]
    if len(rules) == 1:
        return rules[0]
    return lc.ListenerFilterChainMatchPredicate(or_match={"rules": rules})


@functools.lru_cache(maxsize=64)
def _sink_chain(name: str, stat: str, port: int | None, tag: bytes = _LISTENER_CHAINS_TAG) -> bytes:
    """A chain that closes connections (to the deny cluster), logged as route ``name``."""
    match = b""
    if port is not None:
        match = field_bytes(_CHAIN_MATCH, lc.FilterChainMatch(destination_port={"value": port}).SerializeToString(
            deterministic=True))
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat, cluster=ir.DENY_CLUSTER).SerializeToString(deterministic=True)
    return _chain_field(field_bytes(_CHAIN_NAME, name.encode()), match, "tcp",
                        proxy + _access_log_field("tcp", "none", name), tag)


@functools.lru_cache(maxsize=65536)
def _metadata_field(namespace: str) -> bytes:
    """The listener's ``metadata`` field: the client namespace its access logs name."""
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[NAMESPACE_METADATA_FILTER].fields[NAMESPACE_METADATA_KEY].string_value = namespace
    return listener_pb2.Listener(metadata=metadata).SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=64)
def _listener_rest(addresses: tuple[str, ...], port: int, detect_timeout_ms: int,
                   no_detect_ports: tuple[int, ...]) -> bytes:
    """Everything of the listener but its chains, as bytes (the same for every namespace
    with the same options)."""
    skip = _skip_detection([*no_detect_ports, port])
    return listener_pb2.Listener(
        name=LISTENER_NAME,
        address=address_pb2.Address(socket_address={"address": addresses[0], "port_value": port}),
        additional_addresses=[
            listener_pb2.AdditionalAddress(
                address=address_pb2.Address(socket_address={"address": address, "port_value": port}))
            for address in addresses[1:]
        ],
        traffic_direction=base_pb2.OUTBOUND,
        listener_filters=[
            lc.ListenerFilter(name="envoy.filters.listener.original_dst", typed_config=pack(original_dst_pb2.OriginalDst())),
            lc.ListenerFilter(name="envoy.filters.listener.tls_inspector",
                              typed_config=pack(tls_inspector_pb2.TlsInspector()), filter_disabled=skip),
            lc.ListenerFilter(name="envoy.filters.listener.http_inspector",
                              typed_config=pack(http_inspector_pb2.HttpInspector()), filter_disabled=skip),
        ],
        listener_filters_timeout=duration_pb2.Duration(
            seconds=detect_timeout_ms // 1000, nanos=(detect_timeout_ms % 1000) * 1_000_000),
        continue_on_listener_filters_timeout=True,
    ).SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=65536)
def _chain_name(port_label: str, governor_label: str, variant: str) -> bytes:
    """A chain's ``name`` field, as bytes."""
    return field_bytes(_CHAIN_NAME, f"{port_label}|{governor_label}|{variant}".encode())


def build_listener(egress: ir.NamespaceEgress, shared: SharedChains | None = None) -> listener_pb2.Listener:
    """``shared``: the world's shared chains (filled in here)."""
    memo: SharedChains = {} if shared is None else shared
    chains: list[bytes] = []
    networks: dict[ir.Governor, list[ir.IPNetwork]] = {}
    for dest in egress.destinations:
        networks.setdefault(dest.governor, []).append(dest.network)
    by_governor = {governor: (nets, prefixes_key(nets)) for governor, nets in networks.items()}
    governors = sorted(by_governor, key=lambda g: (g.kind != "egress-network", g.label))
    for port in [None, *egress.ports]:
        for governor in governors:
            policy = egress.policy(governor, port)
            prefixes, key = by_governor[governor]
            found = memo.get((id(policy), key))
            if found is None:
                found = memo[(id(policy), key)] = (policy, policy_chains(policy, prefixes, key))
            chains.append(found[1])
    # A connection to the outbound port itself would loop: closed.
    chains.append(_sink_chain("loop-guard", "egress.loop-guard", egress.listener_port))
    chains.append(_sink_chain("unmatched", "egress.unmatched", None, _DEFAULT_CHAIN_TAG))
    chains.append(_metadata_field(egress.namespace))
    chains.append(_listener_rest(tuple(egress.listener_addresses), egress.listener_port, egress.detect_timeout_ms,
                                 tuple(egress.no_detect_ports)))
    # One parse of the whole listener (fields may come in any order on the wire; the
    # message, and so its deterministic serialization, is the same).
    return listener_pb2.Listener.FromString(b"".join(chains))
