"""Fixture: the ADS server in-process on a random loopback port, plus client factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from egress_xds.cache import Snapshot, SnapshotCache
from egress_xds.server.ads import AdsServer
from tests.feature.feature_xds import AdsClient


@dataclass
class Xds:
    cache: SnapshotCache
    ads: AdsServer
    channel: grpc.aio.Channel
    clients: list[AdsClient] = field(default_factory=list)

    def client(self, delta: bool = False) -> AdsClient:
        c = AdsClient(self.channel, delta=delta)
        self.clients.append(c)
        return c

    def set(self, namespace: str, resources: dict, check: bool = True) -> Snapshot:  # type: ignore[type-arg]
        snap = Snapshot(resources)
        self.cache.set_snapshot(namespace, snap, check=check)
        return snap


@pytest.fixture
async def xds() -> AsyncIterator[Xds]:
    cache = SnapshotCache()
    ads = AdsServer(cache)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([ads.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    env = Xds(cache, ads, channel)
    try:
        yield env
    finally:
        for c in env.clients:
            await c.close()
        await channel.close()
        ads.close()
        await server.stop(0.5)
