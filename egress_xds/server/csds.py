"""The standard CSDS service, ``envoy.service.status.v3.ClientStatusDiscoveryService``.

In: the ``AdsServer``'s per-stream bookkeeping (what was sent, acked and NACKed per type and
resource) and the ``SnapshotCache`` (what each sidecar should hold).
Out: one ``ClientConfig`` per connected sidecar (``FetchClientStatus``, and once per request
on ``StreamClientStatus``) with a ``GenericXdsConfig`` per resource. Registered next to ADS
by ``serve``; read by any CSDS client (``istioctl``-like tools, grpcurl, the tests).

Per resource (``config_status`` / ``client_status``), from the server's point of view:
- SYNCED / ACKED: the sidecar acknowledged exactly the content its snapshot holds.
- STALE / ACKED or REQUESTED: a newer content is in flight (sent, not acknowledged) or
  waits to be sent, or the resource is gone from the snapshot and its removal is pending;
  ACKED when the sidecar holds an older content, REQUESTED when it holds none.
- ERROR / NACKED: the sidecar rejected the latest content (``error_state``: Envoy's message,
  the rejected version, when, and the rejected resource) and runs its last good one.
- NOT_SENT / REQUESTED: nothing was sent yet (the type's first response is pending, or a
  route name the sidecar asks for does not exist in the snapshot).
- SYNCED / DOES_NOT_EXIST: delta only: the sidecar was told the name does not exist.
``version_info`` is the version the sidecar holds: the SotW ``version_info`` it acked for the
type, or in delta mode the resource's own version; "" when it holds none. ``xds_config`` is
the content the sidecar acknowledged (omitted with ``exclude_resource_contents``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2, struct_pb2
from google.protobuf import any_pb2
from google.protobuf import struct_pb2 as pb_struct
from google.protobuf.timestamp_pb2 import Timestamp

from egress_xds.cache import ResourceEntry, Snapshot, SnapshotCache
from egress_xds.server.ads import AdsServer, Stream, TypeState

SERVICE = "envoy.service.status.v3.ClientStatusDiscoveryService"

Config = csds_pb2.ClientConfig.GenericXdsConfig
SYNCED, NOT_SENT, STALE, ERROR = (csds_pb2.SYNCED, csds_pb2.NOT_SENT, csds_pb2.STALE, csds_pb2.ERROR)
ACKED, NACKED, REQUESTED, DOES_NOT_EXIST = (
    dump_pb2.ACKED, dump_pb2.NACKED, dump_pb2.REQUESTED, dump_pb2.DOES_NOT_EXIST)


def _packed(entry: ResourceEntry) -> any_pb2.Any:
    return discovery_pb2.DiscoveryResponse.FromString(entry.sotw_chunk).resources[0]


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def type_configs(stream: Stream, st: TypeState, snapshot: Snapshot | None,
                 contents: bool = True) -> list[csds_pb2.ClientConfig.GenericXdsConfig]:
    """One ``GenericXdsConfig`` per resource of one type of one stream, sorted by name."""
    target = stream.target(st, snapshot) if snapshot is not None else None
    want = dict(target.entries) if target is not None else {}
    acked, held = st.acked, st.held
    # SotW: the whole latest response was rejected and the snapshot has not moved since.
    sotw_rejected = (not stream.delta and st.nacked_version is not None and not st.pending
                     and target is not None and target.version == st.nacked_version)
    names = set(want) | set(acked.hashes)
    if not st.wildcard:
        names |= st.names
    out = []
    for name in sorted(names):
        wanted = want.get(name)
        have = acked.hashes.get(name)
        if stream.delta:
            rejected = wanted is not None and st.nacked_hashes.get(name) == wanted.hash
        else:
            rejected = sotw_rejected and (wanted is None or have != wanted.hash)
        if wanted is not None and have == wanted.hash:
            config, client = SYNCED, ACKED
        elif st.nonce is None:
            config, client = NOT_SENT, ACKED if have is not None else REQUESTED
        elif wanted is None and have is None:
            if stream.delta and name in st.absent_reported:
                config, client = SYNCED, DOES_NOT_EXIST
            else:
                config, client = NOT_SENT, REQUESTED
        elif rejected:
            config, client = ERROR, NACKED
        elif wanted is not None and have is None and held.hashes.get(name) != wanted.hash:
            config, client = NOT_SENT, REQUESTED
        else:
            config, client = STALE, ACKED if have is not None else REQUESTED
        if stream.delta:
            version = have or ""
        else:
            version = (st.version_acked or "") if have is not None else ""
        item = Config(type_url=st.type_url, name=name, version_info=version,
                      config_status=config, client_status=client)
        held_entry = acked.entries.get(name)
        if contents and held_entry is not None and have is not None:
            item.xds_config.CopyFrom(_packed(held_entry))
        if config == ERROR and st.last_nack is not None:
            nack = st.last_nack
            item.error_state.details = nack.message
            item.error_state.version_info = nack.version
            item.error_state.last_update_attempt.CopyFrom(_timestamp(nack.at))
            if contents and wanted is not None:
                item.error_state.failed_configuration.CopyFrom(_packed(wanted))
        out.append(item)
    return out


def _node(stream: Stream) -> base_pb2.Node:
    node = getattr(stream, "node", None)
    if isinstance(node, base_pb2.Node):
        return node
    # The stream keeps the node's id and cluster; its namespace is the snapshot key.
    out = base_pb2.Node(id=stream.node_id, cluster=stream.cluster)
    out.metadata.fields["namespace"].CopyFrom(pb_struct.Value(string_value=stream.namespace))
    return out


def client_config(stream: Stream, snapshot: Snapshot | None, contents: bool = True) -> csds_pb2.ClientConfig:
    out = csds_pb2.ClientConfig(node=_node(stream))
    for type_url in stream.order():
        out.generic_xds_configs.extend(type_configs(stream, stream.types[type_url], snapshot, contents))
    return out


# ---- node matchers (OR across matchers; AND within one) ---------------------------------------


def string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    pattern = matcher.WhichOneof("match_pattern")
    if pattern == "safe_regex":
        return re.fullmatch(matcher.safe_regex.regex, value) is not None
    expected = getattr(matcher, pattern) if pattern else ""
    if matcher.ignore_case:
        value, expected = value.lower(), expected.lower()
    if pattern == "exact":
        return value == expected
    if pattern == "prefix":
        return value.startswith(expected)
    if pattern == "suffix":
        return value.endswith(expected)
    if pattern == "contains":
        return expected in value
    return False


def _struct_matches(matcher: struct_pb2.StructMatcher, metadata: pb_struct.Struct) -> bool:
    value: pb_struct.Value | None = pb_struct.Value(struct_value=metadata)
    for segment in matcher.path:
        if value is None or value.WhichOneof("kind") != "struct_value":
            value = None
            break
        value = value.struct_value.fields.get(segment.key)
    expect = matcher.value
    kind = expect.WhichOneof("match_pattern")
    if kind == "present_match":
        return (value is not None) == expect.present_match
    if value is None:
        return False
    if kind == "string_match":
        return value.WhichOneof("kind") == "string_value" and string_matches(expect.string_match, value.string_value)
    if kind == "bool_match":
        return value.WhichOneof("kind") == "bool_value" and value.bool_value == expect.bool_match
    if kind == "null_match":
        return value.WhichOneof("kind") == "null_value"
    return False


def node_matches(matcher: node_pb2.NodeMatcher, node: base_pb2.Node) -> bool:
    if matcher.HasField("node_id") and not string_matches(matcher.node_id, node.id):
        return False
    return all(_struct_matches(m, node.metadata) for m in matcher.node_metadatas)


class CsdsServicer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):
    """CSDS over the ADS streams. Register with ``register(server)``."""

    def __init__(self, cache: SnapshotCache, ads: AdsServer) -> None:
        self.cache = cache
        self.ads = ads

    def register(self, server: grpc.aio.Server) -> None:
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(self, server)

    def client_status(self, request: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        out = csds_pb2.ClientStatusResponse()
        streams = sorted(self.ads.streams.values(), key=lambda s: (s.namespace, s.node_id, s.id))
        for stream in streams:
            node = _node(stream)
            if request.node_matchers and not any(node_matches(m, node) for m in request.node_matchers):
                continue
            out.config.append(client_config(stream, self.cache.get_snapshot(stream.namespace),
                                            contents=not request.exclude_resource_contents))
        return out

    async def FetchClientStatus(self, request: csds_pb2.ClientStatusRequest,
                                context: grpc.aio.ServicerContext) -> csds_pb2.ClientStatusResponse:
        return self.client_status(request)

    async def StreamClientStatus(self, request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest],
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in request_iterator:
            yield self.client_status(request)
