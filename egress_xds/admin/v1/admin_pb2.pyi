from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainRequest(_message.Message):
    __slots__ = ("namespace", "ip", "port", "tls", "http")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    ip: str
    port: int
    tls: TlsConnection
    http: HttpRequest
    def __init__(self, namespace: _Optional[str] = ..., ip: _Optional[str] = ..., port: _Optional[int] = ..., tls: _Optional[_Union[TlsConnection, _Mapping]] = ..., http: _Optional[_Union[HttpRequest, _Mapping]] = ...) -> None: ...

class TlsConnection(_message.Message):
    __slots__ = ("sni",)
    SNI_FIELD_NUMBER: _ClassVar[int]
    sni: str
    def __init__(self, sni: _Optional[str] = ...) -> None: ...

class HttpRequest(_message.Message):
    __slots__ = ("host", "path", "method", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    host: str
    path: str
    method: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, host: _Optional[str] = ..., path: _Optional[str] = ..., method: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("egress_network", "route", "action", "destination", "reason")
    EGRESS_NETWORK_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    egress_network: str
    route: str
    action: str
    destination: str
    reason: str
    def __init__(self, egress_network: _Optional[str] = ..., route: _Optional[str] = ..., action: _Optional[str] = ..., destination: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("namespace", "version", "type_versions", "size_bytes", "resources")
    class TypeVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    version: str
    type_versions: _containers.ScalarMap[str, str]
    size_bytes: int
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, namespace: _Optional[str] = ..., version: _Optional[str] = ..., type_versions: _Optional[_Mapping[str, str]] = ..., size_bytes: _Optional[int] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("type_url", "name", "version", "resource")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    name: str
    version: str
    resource: _any_pb2.Any
    def __init__(self, type_url: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., resource: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class ListProxiesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies",)
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[Proxy]
    def __init__(self, proxies: _Optional[_Iterable[_Union[Proxy, _Mapping]]] = ...) -> None: ...

class Proxy(_message.Message):
    __slots__ = ("id", "node_id", "cluster", "namespace", "mode", "peer", "connected_at", "snapshot_version", "types")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    id: int
    node_id: str
    cluster: str
    namespace: str
    mode: str
    peer: str
    connected_at: float
    snapshot_version: str
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    def __init__(self, id: _Optional[int] = ..., node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., namespace: _Optional[str] = ..., mode: _Optional[str] = ..., peer: _Optional[str] = ..., connected_at: _Optional[float] = ..., snapshot_version: _Optional[str] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ...) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type", "type_url", "state", "version_sent", "version_acked", "nonce", "wildcard", "subscribed", "resources", "last_nack")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    WILDCARD_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    type: str
    type_url: str
    state: str
    version_sent: str
    version_acked: str
    nonce: str
    wildcard: bool
    subscribed: _containers.RepeatedScalarFieldContainer[str]
    resources: int
    last_nack: Nack
    def __init__(self, type: _Optional[str] = ..., type_url: _Optional[str] = ..., state: _Optional[str] = ..., version_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., nonce: _Optional[str] = ..., wildcard: _Optional[bool] = ..., subscribed: _Optional[_Iterable[str]] = ..., resources: _Optional[int] = ..., last_nack: _Optional[_Union[Nack, _Mapping]] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("version", "nonce", "message", "code", "at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    version: str
    nonce: str
    message: str
    code: int
    at: float
    def __init__(self, version: _Optional[str] = ..., nonce: _Optional[str] = ..., message: _Optional[str] = ..., code: _Optional[int] = ..., at: _Optional[float] = ...) -> None: ...

class WatchProxiesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ProxyEvent(_message.Message):
    __slots__ = ("kind", "proxies")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ProxyEvent.Kind]
        CURRENT: _ClassVar[ProxyEvent.Kind]
        CONNECTED: _ClassVar[ProxyEvent.Kind]
        CHANGED: _ClassVar[ProxyEvent.Kind]
        DISCONNECTED: _ClassVar[ProxyEvent.Kind]
    KIND_UNSPECIFIED: ProxyEvent.Kind
    CURRENT: ProxyEvent.Kind
    CONNECTED: ProxyEvent.Kind
    CHANGED: ProxyEvent.Kind
    DISCONNECTED: ProxyEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    kind: ProxyEvent.Kind
    proxies: _containers.RepeatedCompositeFieldContainer[Proxy]
    def __init__(self, kind: _Optional[_Union[ProxyEvent.Kind, str]] = ..., proxies: _Optional[_Iterable[_Union[Proxy, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("objects", "errors")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectStatus]
    errors: _containers.RepeatedCompositeFieldContainer[LoadError]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectStatus, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[LoadError, _Mapping]]] = ...) -> None: ...

class ObjectStatus(_message.Message):
    __slots__ = ("kind", "namespace", "name", "conditions", "parents")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    parents: _containers.RepeatedCompositeFieldContainer[ParentStatus]
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., parents: _Optional[_Iterable[_Union[ParentStatus, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("type", "status", "reason", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    status: str
    reason: str
    message: str
    def __init__(self, type: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ParentStatus(_message.Message):
    __slots__ = ("parent_ref", "controller_name", "conditions")
    PARENT_REF_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_NAME_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    parent_ref: ParentReference
    controller_name: str
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, parent_ref: _Optional[_Union[ParentReference, _Mapping]] = ..., controller_name: _Optional[str] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class ParentReference(_message.Message):
    __slots__ = ("group", "kind", "namespace", "name", "port")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    group: str
    kind: str
    namespace: str
    name: str
    port: int
    def __init__(self, group: _Optional[str] = ..., kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class LoadError(_message.Message):
    __slots__ = ("file", "kind", "namespace", "name", "field", "message")
    FILE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file: str
    kind: str
    namespace: str
    name: str
    field: str
    message: str
    def __init__(self, file: _Optional[str] = ..., kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
