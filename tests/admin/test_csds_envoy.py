"""CSDS as a real Envoy's config status: a CSDS client built from xds-protos watches one
sidecar go SYNCED, STALE (stopped with SIGSTOP while a change is pushed), ERROR (it rejects a
listener) and NOT_SENT (it asks for a route that does not exist). The control plane runs
in-process (``serve.Server``); Envoy binds loopback only; every wait is bounded."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from egress_xds import bootstrap
from egress_xds.cache import Snapshot
from egress_xds.resources import CLUSTER, LISTENER, ROUTE
from egress_xds.serve import Server
from tests.feature.feature_xds import http_listener
from tests.server.envoy_proc import (
    ROUTE_TEMPLATE,
    EnvoyProcess,
    app_control_plane,
    eventually,
    free_port,
    snapshot_envoy_rejects,
)

pytestmark = pytest.mark.envoy

Config: TypeAlias = csds_pb2.ClientConfig.GenericXdsConfig


@pytest.fixture
async def control_plane(tmp_path: Path) -> AsyncIterator[Server]:
    async with app_control_plane(tmp_path) as server:
        yield server


async def start_envoy(server: Server, tmp_path: Path, node_id: str, delta: bool = False) -> EnvoyProcess:
    text = bootstrap.render(bootstrap.BootstrapOptions(
        namespace="app", node_id=node_id, ads=server.ads_address, delta=delta, access_log_path="/dev/null"))
    envoy = EnvoyProcess(text, tmp_path, name=node_id.replace("~", "-"))
    await envoy.start()
    return envoy


class Csds:
    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self.stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        self.node_id = node_id

    async def items(self) -> dict[tuple[str, str], Config]:
        response = await self.stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
        for config in response.config:
            if config.node.id == self.node_id:
                return {(c.type_url, c.name): c for c in config.generic_xds_configs}
        return {}

    async def all_synced(self) -> dict[tuple[str, str], Config] | None:
        items = await self.items()
        types = {t for t, _ in items}
        ok = {CLUSTER, LISTENER, ROUTE} <= types and all(
            (c.config_status, c.client_status) == (csds_pb2.SYNCED, dump_pb2.ACKED) for c in items.values())
        return items if ok else None


def names(items: dict[tuple[str, str], Config], type_url: str) -> set[str]:
    return {n for t, n in items if t == type_url}


async def test_csds_follows_a_real_envoy(control_plane: Server, tmp_path: Path) -> None:
    envoy = await start_envoy(control_plane, tmp_path, "sidecar~csds")
    channel = grpc.aio.insecure_channel(control_plane.admin_address)
    csds = Csds(channel, "sidecar~csds")
    stopped = False
    try:
        await envoy.wait_ready()
        # SYNCED: every resource Envoy holds, at the version its config_dump shows.
        items = await eventually(csds.all_synced)
        snapshot = control_plane.cache.get_snapshot("app")
        assert snapshot is not None
        have = await envoy.dynamic()
        for type_url in (CLUSTER, LISTENER, ROUTE):
            assert names(items, type_url) == set(have[type_url]) == set(snapshot.entries[type_url])
            for name, (version, _) in have[type_url].items():
                assert items[(type_url, name)].version_info == version
        config = (await csds.stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)).config[0]
        assert config.node.metadata.fields["namespace"].string_value == "app"

        # STALE: the sidecar is stopped while an edit is pushed; SYNCED again once it runs.
        assert envoy.proc is not None
        os.kill(envoy.proc.pid, signal.SIGSTOP)
        stopped = True
        manifests = Path(control_plane.config.manifests[0])
        (manifests / "route.yaml").write_text(ROUTE_TEMPLATE % "docs.example.com, api.example.com")

        async def stale() -> list[Config]:
            return [c for c in (await csds.items()).values() if c.config_status == csds_pb2.STALE]

        behind = await eventually(stale, timeout=5)
        assert {c.type_url for c in behind} == {ROUTE}
        assert all(c.client_status == dump_pb2.ACKED for c in behind)  # it holds the old one
        os.kill(envoy.proc.pid, signal.SIGCONT)
        stopped = False
        await eventually(csds.all_synced)

        # ERROR: Envoy rejects listeners with two identical filter chains.
        good = control_plane.cache.get_snapshot("app")
        assert good is not None
        resources = {t: dict(by_name) for t, by_name in good.resources.items()}
        control_plane.cache.set_snapshot("app", snapshot_envoy_rejects(good))

        async def errors() -> list[Config]:
            return [c for c in (await csds.items()).values() if c.config_status == csds_pb2.ERROR]

        rejected = await eventually(errors)
        assert {c.type_url for c in rejected} == {LISTENER}
        for item in rejected:
            assert item.client_status == dump_pb2.NACKED
            assert "same matching rules" in item.error_state.details
            assert item.error_state.version_info != item.version_info
            assert item.version_info == good.type_version(LISTENER)  # the last good one runs
        assert await envoy.stat("listener_manager.lds.update_rejected") == 1

        # NOT_SENT: a new listener names a route configuration the snapshot does not have.
        extra = http_listener("csds-extra", free_port(), "no-such-route")
        control_plane.cache.set_snapshot(
            "app", Snapshot({**resources, LISTENER: {**resources[LISTENER], "csds-extra": extra}}), check=False)

        async def not_sent() -> Config | None:
            item = (await csds.items()).get((ROUTE, "no-such-route"))
            return item if item is not None and item.config_status == csds_pb2.NOT_SENT else None

        missing = await eventually(not_sent)
        assert missing.client_status == dump_pb2.REQUESTED and not missing.version_info
        listener = (await csds.items())[(LISTENER, "csds-extra")]
        assert (listener.config_status, listener.client_status) == (csds_pb2.SYNCED, dump_pb2.ACKED)
    finally:
        if stopped and envoy.proc is not None:
            os.kill(envoy.proc.pid, signal.SIGCONT)
        await channel.close()
        await envoy.stop()


async def test_csds_delta_sidecar_is_synced(control_plane: Server, tmp_path: Path) -> None:
    envoy = await start_envoy(control_plane, tmp_path, "sidecar~delta", delta=True)
    channel = grpc.aio.insecure_channel(control_plane.admin_address)
    try:
        await envoy.wait_ready()
        items = await eventually(Csds(channel, "sidecar~delta").all_synced)
        snapshot = control_plane.cache.get_snapshot("app")
        assert snapshot is not None
        for (type_url, name), item in items.items():
            assert item.version_info == snapshot.entries[type_url][name].hash  # per-resource version
            assert item.xds_config.type_url == type_url
    finally:
        await channel.close()
        await envoy.stop()
