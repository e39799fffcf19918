"""CSDS (``envoy.service.status.v3``) against a live ``serve``, with in-process ADS clients
that ack, hold back acks and NACK on cue."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2, struct_pb2

from egress_xds.resources import LISTENER, ROUTE
from tests.admin.conftest import Live
from tests.feature.feature_xds import AdsClient, node

Config: TypeAlias = csds_pb2.ClientConfig.GenericXdsConfig


def statuses(response: csds_pb2.ClientStatusResponse, node_id: str) -> dict[tuple[str, str], Config]:
    for config in response.config:
        if config.node.id == node_id:
            return {(c.type_url, c.name): c for c in config.generic_xds_configs}
    raise AssertionError(f"{node_id} not in {[c.node.id for c in response.config]}")


def of_type(items: dict[tuple[str, str], Config], type_url: str) -> list[Config]:
    return [c for (t, _), c in sorted(items.items()) if t == type_url]


async def fetch(stub: Any, **fields: Any) -> csds_pb2.ClientStatusResponse:
    response: csds_pb2.ClientStatusResponse = await stub.FetchClientStatus(
        csds_pb2.ClientStatusRequest(**fields), timeout=5)
    return response


async def test_csds_reports_per_resource_status(live: Live) -> None:
    csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(live.channel)
    channel = grpc.aio.insecure_channel(live.server.ads_address)
    sotw = AdsClient(channel)
    delta = AdsClient(channel, delta=True)
    try:
        await sotw.send(node=node("web", "sidecar~sotw"), type_url=LISTENER)
        response = await sotw.recv()
        await asyncio.sleep(0.05)
        # Sent, not acknowledged: STALE, and the sidecar holds nothing yet.
        listeners = of_type(statuses(await fetch(csds), "sidecar~sotw"), LISTENER)
        assert listeners and {(c.config_status, c.client_status) for c in listeners} == {
            (csds_pb2.STALE, dump_pb2.REQUESTED)}

        await sotw.ack(response)
        # A route that does not exist is never sent.
        await sotw.send(type_url=ROUTE, resource_names=["no-such-route"])
        await sotw.recv()
        await asyncio.sleep(0.05)
        result = await fetch(csds)
        config = next(c for c in result.config if c.node.id == "sidecar~sotw")
        assert config.node.metadata.fields["namespace"].string_value == "web"
        items = statuses(result, "sidecar~sotw")
        listeners = of_type(items, LISTENER)
        assert {(c.config_status, c.client_status) for c in listeners} == {(csds_pb2.SYNCED, dump_pb2.ACKED)}
        assert {c.version_info for c in listeners} == {response.version_info}
        assert all(c.xds_config.type_url == LISTENER for c in listeners)
        route = items[(ROUTE, "no-such-route")]
        assert (route.config_status, route.client_status) == (csds_pb2.NOT_SENT, dump_pb2.REQUESTED)
        bare = statuses(await fetch(csds, exclude_resource_contents=True), "sidecar~sotw")
        assert not any(c.HasField("xds_config") for c in bare.values())

        # The sidecar rejects the next content: ERROR / NACKED with Envoy's message.
        other = live.server.cache.get_snapshot("payments")
        assert other is not None
        live.server.cache.set_snapshot("web", other)
        rejected = await sotw.recv()
        assert rejected.type_url == LISTENER
        await sotw.send(type_url=LISTENER, version_info=response.version_info, response_nonce=rejected.nonce,
                        error_detail={"code": 3, "message": "listener rejected for the test"})
        await asyncio.sleep(0.05)
        listeners = of_type(statuses(await fetch(csds), "sidecar~sotw"), LISTENER)
        errors = [c for c in listeners if c.config_status == csds_pb2.ERROR]
        assert errors and all(c.client_status == dump_pb2.NACKED for c in errors)
        for item in errors:
            assert item.error_state.details == "listener rejected for the test"
            assert item.error_state.version_info == rejected.version_info
            assert item.error_state.failed_configuration.type_url == LISTENER
            assert item.version_info == response.version_info  # it runs the last good one

        # Delta: a name told not to exist.
        await delta.send(node=node("app", "sidecar~delta"), type_url=ROUTE, resource_names_subscribe=["nope"])
        await delta.ack(await delta.recv())
        await asyncio.sleep(0.05)
        route = statuses(await fetch(csds), "sidecar~delta")[(ROUTE, "nope")]
        assert (route.config_status, route.client_status) == (csds_pb2.SYNCED, dump_pb2.DOES_NOT_EXIST)
    finally:
        await sotw.close()
        await delta.close()
        await channel.close()


async def test_csds_node_matchers_and_stream(live: Live) -> None:
    csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(live.channel)
    channel = grpc.aio.insecure_channel(live.server.ads_address)
    clients = [AdsClient(channel), AdsClient(channel)]
    try:
        for client, (namespace, node_id) in zip(clients, [("web", "sidecar~a.web"), ("app", "sidecar~b.app")], strict=True):
            await client.send(node=node(namespace, node_id), type_url=LISTENER)
            await client.ack(await client.recv())
        await asyncio.sleep(0.05)
        everything = await fetch(csds)
        assert [c.node.id for c in everything.config] == ["sidecar~b.app", "sidecar~a.web"]
        by_id = node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(suffix=".web"))
        assert [c.node.id for c in (await fetch(csds, node_matchers=[by_id])).config] == ["sidecar~a.web"]
        by_namespace = node_pb2.NodeMatcher(node_metadatas=[struct_pb2.StructMatcher(
            path=[struct_pb2.StructMatcher.PathSegment(key="namespace")],
            value={"string_match": {"exact": "app"}})])
        assert [c.node.id for c in (await fetch(csds, node_matchers=[by_namespace])).config] == ["sidecar~b.app"]
        assert len((await fetch(csds, node_matchers=[by_id, by_namespace])).config) == 2

        stream = csds.StreamClientStatus()
        for matcher in (by_id, by_namespace):
            await stream.write(csds_pb2.ClientStatusRequest(node_matchers=[matcher]))
            answer = await asyncio.wait_for(stream.read(), 5)
            assert len(answer.config) == 1
        await stream.done_writing()
        assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
    finally:
        for client in clients:
            await client.close()
        await channel.close()
