"""The listener is assembled from serialized parts (``envoy.common.field_bytes``,
``access_log_bytes``, ``envoy.listener``'s chain builders). These tests hold that assembly to
what upb itself writes: every packed ``Any`` in every golden case and the demo examples is
byte for byte the deterministic serialization of the message it holds, so versions and
hashes are the same as if each message had been built and serialized whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import any_pb2, symbol_database, wrappers_pb2
from google.protobuf.message import Message

from egress_xds.envoy.common import access_log_bytes, field_bytes, pack, varint
from egress_xds.model.load import load_paths
from egress_xds.translate import Translator

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "golden" / "cases").iterdir() if (p / "input.yaml").exists())


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35])
def test_varint_and_field_bytes_match_upb(value: int) -> None:
    payload = b"x" * (value if 0 < value < 70_000 else 3)  # upb omits an empty proto3 bytes field
    assert field_bytes(1, payload) == wrappers_pb2.BytesValue(value=payload).SerializeToString()
    assert varint(value) == (wrappers_pb2.UInt64Value(value=value).SerializeToString()[1:] if value else b"\x00")


def _unpack(packed: any_pb2.Any) -> Message:
    name = packed.type_url.rsplit("/", 1)[1]
    message: Message = symbol_database.Default().GetSymbol(name)()
    message.ParseFromString(packed.value)
    return message


def _anys(message: Message) -> list[any_pb2.Any]:
    """Every Any in ``message``, at any depth (inside packed values too)."""
    found: list[any_pb2.Any] = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        items = (list(value.values()) if field.message_type.GetOptions().map_entry else list(value)
                 ) if field.is_repeated else [value]
        for item in items:
            if not isinstance(item, Message):
                continue
            if isinstance(item, any_pb2.Any):
                found.append(item)
                found.extend(_anys(_unpack(item)))
            else:
                found.extend(_anys(item))
    return found


def _listeners() -> list[tuple[str, listener_pb2.Listener]]:
    out = []
    inputs = [c / "input.yaml" for c in CASES] + [sorted((ROOT / "examples").rglob("*.yaml"))]
    for paths in inputs:
        translator = Translator()
        translator.load(load_paths(paths if isinstance(paths, list) else [paths]).objects)
        for namespace in sorted({*translator.namespaces(), "app"}):
            for name, listener in translator.resources(namespace)[
                    "type.googleapis.com/envoy.config.listener.v3.Listener"].items():
                out.append((f"{namespace}/{name}", listener))  # type: ignore[arg-type]
    return out


def test_every_packed_value_is_the_canonical_bytes_of_its_message() -> None:
    listeners = _listeners()
    assert len(listeners) >= 60
    checked = 0
    for label, listener in listeners:
        assert listener.SerializeToString(deterministic=True) == listener_pb2.Listener.FromString(
            listener.SerializeToString(deterministic=True)).SerializeToString(deterministic=True), label
        for packed in _anys(listener):
            assert packed.value == _unpack(packed).SerializeToString(deterministic=True), (label, packed.type_url)
            checked += 1
    assert checked > 1_000


@pytest.mark.parametrize("protocol", ["tcp", "http"])
@pytest.mark.parametrize("route", [None, "HTTPRoute ns/r"])
def test_access_log_equals_the_message_built_field_by_field(protocol: str, route: str | None) -> None:
    fields = {
        "time": "%START_TIME%", "namespace": "%METADATA(LISTENER:egress_xds:namespace)%",
        "egress_network": "egress/internet", "protocol": protocol,
        "destination": "%DOWNSTREAM_LOCAL_ADDRESS%", "port": "%DOWNSTREAM_LOCAL_PORT%",
        "route": route or "%ROUTE_NAME%", "sni": "%REQUESTED_SERVER_NAME%", "upstream": "%UPSTREAM_HOST%",
        "flags": "%RESPONSE_FLAGS%", "bytes_sent": "%BYTES_SENT%", "bytes_received": "%BYTES_RECEIVED%",
        "duration_ms": "%DURATION%",
    }
    if protocol == "http":
        fields |= {"host": "%REQ(:AUTHORITY)%", "method": "%REQ(:METHOD)%",
                   "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "status": "%RESPONSE_CODE%",
                   "grpc_status": "%GRPC_STATUS_NUMBER%"}
    expected = accesslog_pb2.AccessLog(
        name="envoy.access_loggers.stdout",
        typed_config=pack(stream_pb2.StdoutAccessLog(log_format={"json_format": fields})))
    built = accesslog_pb2.AccessLog.FromString(access_log_bytes("egress/internet", route, protocol))
    assert built == expected
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
