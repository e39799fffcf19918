"""Fixture: the ADS server in-process on a random loopback port, plus client factories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from egress_xds.cache import Snapshot, SnapshotCache
from egress_xds.server.ads import AdsServer
from tests.feature.feature_xds import AdsClient, ads_on_loopback


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
    async with ads_on_loopback(ads) as (_target, channel):
        env = Xds(cache, ads, channel)
        try:
            yield env
        finally:
            for c in env.clients:
                await c.close()
