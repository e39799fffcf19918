"""A real Envoy, started from ``egress-xds bootstrap``, against the control plane.

The control plane runs in-process (``serve.Server``, the same object ``egress-xds serve``
runs) so a test can also inject a snapshot into its cache; ``test_serve_cli.py`` runs the
real ``egress-xds serve`` process.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from egress_xds.cache import Snapshot
from egress_xds.resources import CLUSTER, LISTENER, ROUTE
from egress_xds.serve import ServeConfig, Server
from egress_xds.translate import TranslatorOptions
from tests.server.envoy_proc import (
    ROUTE_TEMPLATE,
    EnvoyProcess,
    app_control_plane,
    canonical,
    cli,
    eventually,
    free_port,
    snapshot_envoy_rejects,
)

pytestmark = pytest.mark.envoy

TYPES = {CLUSTER: cluster_pb2.Cluster, LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration}


@pytest.fixture
async def control_plane(tmp_path: Path) -> AsyncIterator[Server]:
    async with app_control_plane(tmp_path) as server:
        yield server


async def start_envoy(server: Server, tmp_path: Path, namespace: str, *extra: str) -> EnvoyProcess:
    code, text, err = await cli("bootstrap", "--namespace", namespace, "--node-id", f"sidecar~{namespace}",
                                "--ads", server.ads_address, "--access-log", "/dev/null", *extra)
    assert code == 0, err
    envoy = EnvoyProcess(text, tmp_path, name=f"envoy-{namespace}")
    await envoy.start()
    return envoy


async def debug(server: Server, path: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session, session.get(server.debug_url + path) as r:
        assert r.status == 200
        data: dict = json.loads(await r.text())  # type: ignore[type-arg]
        return data


async def proxy_types(server: Server, node_id: str) -> dict:  # type: ignore[type-arg]
    proxies = (await debug(server, "/debug/proxies"))["proxies"]
    for proxy in proxies:
        if proxy["node_id"] == node_id:
            types: dict = proxy["types"]  # type: ignore[type-arg]
            return types
    return {}


async def matches_snapshot(envoy: EnvoyProcess, snapshot: Snapshot) -> bool:
    """Envoy's active dynamic config is exactly the snapshot (routes: those its listeners name)."""
    have = await envoy.dynamic()
    wanted_routes = set().union(*(e.routes for e in snapshot.entries[LISTENER].values()))
    for type_url, message_type in TYPES.items():
        want = snapshot.resources.get(type_url, {})
        names = set(want) if type_url != ROUTE else wanted_routes
        if set(have[type_url]) != names:
            return False
        for name in names:
            if canonical(have[type_url][name][1], message_type) != canonical(want[name], message_type):
                return False
    return True


async def all_synced(server: Server, node_id: str) -> bool:
    types = await proxy_types(server, node_id)
    return bool(types) and all(types[t]["state"] == "SYNCED" for t in ("clusters", "listeners", "routes"))


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_envoy_gets_the_snapshot_and_edits(control_plane: Server, tmp_path: Path, mode: str) -> None:
    envoy = await start_envoy(control_plane, tmp_path, "app", *(["--delta"] if mode == "delta" else []))
    try:
        await envoy.wait_ready()
        snapshot = control_plane.cache.get_snapshot("app")
        assert snapshot is not None
        await eventually(lambda: matches_snapshot(envoy, snapshot))
        await eventually(lambda: all_synced(control_plane, "sidecar~app"))
        types = await proxy_types(control_plane, "sidecar~app")
        if mode == "sotw":
            have = await envoy.dynamic()
            assert {v for v, _ in have[CLUSTER].values()} == {types["clusters"]["version_acked"]}
            assert {v for v, _ in have[LISTENER].values()} == {types["listeners"]["version_acked"]}
        proxy = (await debug(control_plane, "/debug/proxies"))["proxies"][0]
        assert proxy["mode"] == mode and proxy["namespace"] == "app"
        # The translator's stat prefixes come out as Prometheus labels through the bootstrap.
        _, prom = await envoy.get("/stats/prometheus")
        assert re.search(r'envoy_http_downstream_rq_total\{[^}]*egress_namespace="app",egress_network="internet",'
                         r'egress_port="80"', prom), prom[:3000]

        # A manifest edit reaches Envoy, and is acked.
        manifests = Path(control_plane.config.manifests[0])
        started = time.monotonic()
        (manifests / "route.yaml").write_text(ROUTE_TEMPLATE % "docs.example.com, api.example.com")

        async def new_snapshot() -> Snapshot | None:
            snap = control_plane.cache.get_snapshot("app")
            return snap if snap is not None and snap.version != snapshot.version else None

        edited = await eventually(new_snapshot, timeout=5)
        await eventually(lambda: matches_snapshot(envoy, edited), timeout=5)
        elapsed = time.monotonic() - started
        await eventually(lambda: all_synced(control_plane, "sidecar~app"))
        routes = (await envoy.dynamic())[ROUTE]
        assert any("api.example.com" in json.dumps(cfg) for _, cfg in routes.values())
        assert elapsed < 3.0, f"edit took {elapsed:.3f}s to reach Envoy"
        assert await envoy.stat("listener_manager.lds.update_rejected") == 0
    finally:
        await envoy.stop()


async def test_invalid_snapshot_is_nacked_and_last_good_kept(control_plane: Server, tmp_path: Path) -> None:
    envoy = await start_envoy(control_plane, tmp_path, "app")
    try:
        await envoy.wait_ready()
        good = control_plane.cache.get_snapshot("app")
        assert good is not None
        await eventually(lambda: all_synced(control_plane, "sidecar~app"))
        # Two filter chains with identical matches: Envoy rejects the whole listener.
        rejected = snapshot_envoy_rejects(good)
        control_plane.cache.set_snapshot("app", rejected)

        async def nacked() -> dict | None:  # type: ignore[type-arg]
            listeners_state = (await proxy_types(control_plane, "sidecar~app")).get("listeners", {})
            return listeners_state if listeners_state.get("state") == "NACKED" else None

        state = await eventually(nacked)
        assert "same matching rules" in state["last_nack"]["message"]
        assert state["version_acked"] == good.type_version(LISTENER)
        assert await envoy.stat("listener_manager.lds.update_rejected") == 1
        # Envoy keeps serving the last good config.
        assert await matches_snapshot(envoy, good)
        status, text = await envoy.get("/ready")
        assert (status, text.strip()) == (200, "LIVE")
        async with aiohttp.ClientSession() as session, session.get(control_plane.debug_url + "/metrics") as r:
            metrics = await r.text()
        assert 'egress_xds_nacks_total{type="listeners"} 1.0' in metrics
        # The rejected version is not sent again; the next good snapshot is.
        control_plane.cache.set_snapshot("app", Snapshot(rejected.resources))
        assert await envoy.stat("listener_manager.lds.update_rejected") == 1
        control_plane.cache.set_snapshot("app", good)
        await eventually(lambda: all_synced(control_plane, "sidecar~app"))
        assert await envoy.stat("listener_manager.lds.update_rejected") == 1
    finally:
        await envoy.stop()


async def test_two_namespaces_get_their_own_config(control_plane: Server, tmp_path: Path) -> None:
    app = await start_envoy(control_plane, tmp_path, "app")
    other = await start_envoy(control_plane, tmp_path, "other")  # no objects: global egress view
    try:
        await app.wait_ready()
        await other.wait_ready()
        for envoy, namespace in ((app, "app"), (other, "other")):
            snapshot = control_plane.cache.get_snapshot(namespace)
            assert snapshot is not None
            await eventually(lambda e=envoy, s=snapshot: matches_snapshot(e, s))
        app_snap, other_snap = control_plane.cache.get_snapshot("app"), control_plane.cache.get_snapshot("other")
        assert app_snap is not None and other_snap is not None
        assert app_snap.type_version(LISTENER) != other_snap.type_version(LISTENER)
    finally:
        await app.stop()
        await other.stop()


async def test_bundled_examples_are_accepted_by_envoy(tmp_path: Path) -> None:
    server = Server(ServeConfig(ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0", watch=False,
                                options=TranslatorOptions(outbound_port=free_port(), listener_addresses=("127.0.0.1",))))
    await server.start()
    envoys = []
    try:
        namespaces = server.cache.namespaces()
        assert len(namespaces) >= 2, namespaces
        for i, namespace in enumerate(namespaces):
            envoys.append(await start_envoy(server, tmp_path, namespace, *(["--delta"] if i % 2 else [])))
        for envoy, namespace in zip(envoys, namespaces, strict=True):
            await envoy.wait_ready()
            snapshot = server.cache.get_snapshot(namespace)
            assert snapshot is not None
            await eventually(lambda e=envoy, s=snapshot: matches_snapshot(e, s))
            await eventually(lambda n=namespace: all_synced(server, f"sidecar~{n}"))
            assert await envoy.stat("listener_manager.lds.update_rejected") == 0
    finally:
        for envoy in envoys:
            await envoy.stop()
        await server.stop()
