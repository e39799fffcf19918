"""Server reflection (what grpcurl uses): the admin API, CSDS and ADS are listed, and their
messages, including the Envoy types inside ``Any`` fields, resolve from the server."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.admin.conftest import Live


def reflect(address: str) -> tuple[set[str], list[str], list[str]]:
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        services = set(database.get_services())
        admin = pool.FindServiceByName("egress_xds.admin.v1.AdminService")
        csds = pool.FindServiceByName("envoy.service.status.v3.ClientStatusDiscoveryService")
        listener = pool.FindMessageTypeByName("envoy.config.listener.v3.Listener")
        assert listener.fields_by_name["filter_chains"]
        return services, [m.name for m in admin.methods], [m.name for m in csds.methods]


async def test_reflection_lists_and_resolves_the_services(live: Live) -> None:
    services, admin, csds = await asyncio.to_thread(reflect, live.server.admin_address)
    assert {"egress_xds.admin.v1.AdminService", "envoy.service.status.v3.ClientStatusDiscoveryService",
            "envoy.service.discovery.v3.AggregatedDiscoveryService"} <= services
    assert admin == ["Explain", "GetSnapshot", "ListProxies", "GetStatus", "WatchProxies"]
    assert set(csds) == {"StreamClientStatus", "FetchClientStatus"}
