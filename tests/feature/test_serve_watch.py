"""``serve`` in-process: manifest changes reach connected sidecars fast, debug endpoint output."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from egress_xds.resources import LISTENER
from egress_xds.serve import ServeConfig, Server
from egress_xds.translate import TranslatorOptions
from tests.feature.feature_xds import AdsClient, node

NET = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {{name: {name}, namespace: app}}
spec: {{trafficPolicy: {policy}}}
"""


@pytest.fixture(params=["inotify", "watchfiles"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "net.yaml").write_text(NET.format(name="internet", policy="Allow"))
    srv = Server(ServeConfig(manifests=[str(manifests)], ads_listen="127.0.0.1:0",
                             debug_listen="127.0.0.1:0", options=TranslatorOptions(outbound_port=15001),
                             watcher=request.param))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def get(server: Server, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(server.debug_url + path) as r:
        return r.status, await r.text()


async def connect(server: Server, namespace: str = "app") -> tuple[AdsClient, grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(server.ads_address)
    client = AdsClient(channel)
    await client.send(node=node(namespace), type_url=LISTENER)
    await client.ack(await client.recv())
    return client, channel


async def test_changes_reach_a_connected_sidecar_fast(server: Server) -> None:
    client, channel = await connect(server)
    manifests = Path(server.config.manifests[0])
    try:
        latencies = []
        changes = [
            lambda: (manifests / "net.yaml").write_text(NET.format(name="internet", policy="Deny")),  # modify
            lambda: (manifests / "more.yaml").write_text(NET.format(name="corp", policy="Allow")),  # create
            lambda: (manifests / "more.yaml").rename(manifests / "moved.yml"),  # rename: same objects
            lambda: (manifests / "moved.yml").unlink(),  # delete
        ]
        for i, change in enumerate(changes):
            started = time.monotonic()
            change()
            if i == 2:  # a rename changes no object: nothing is pushed
                await client.nothing(0.3)
                continue
            response = await client.recv(timeout=3)
            latencies.append(time.monotonic() - started)
            await client.ack(response)
        print("change -> push latencies (s):", [round(x, 4) for x in latencies])
        assert max(latencies) < 0.5
    finally:
        await client.close()
        await channel.close()


async def settle(client: AdsClient, server: Server, want: str | None = None) -> str:
    """Receive and ack listener pushes until the sidecar holds the current snapshot's
    listeners (and, if given, that version); return that version."""
    deadline = time.monotonic() + 5
    while True:
        assert time.monotonic() < deadline, "no push reached the current snapshot"
        response = await client.recv(timeout=3)
        await client.ack(response)
        snapshot = server.cache.get_snapshot("app")
        assert snapshot is not None
        if response.version_info == snapshot.type_version(LISTENER) and want in (None, response.version_info):
            return str(response.version_info)


async def test_atomic_save_and_configmap_swap_are_seen(server: Server) -> None:
    manifests = Path(server.config.manifests[0])
    snapshot = server.cache.get_snapshot("app")
    assert snapshot is not None
    allow_version = snapshot.type_version(LISTENER)
    client, channel = await connect(server)
    try:
        # An editor's atomic save: temporary file renamed over the original.
        tmp = manifests / ".net.yaml.tmp"
        tmp.write_text(NET.format(name="internet", policy="Deny"))
        tmp.replace(manifests / "net.yaml")
        deny_version = await settle(client, server)
        assert deny_version != allow_version
        # A ConfigMap volume: visible symlinks -> ..data -> ..<timestamp>/, updated by swapping
        # ..data. Versions are content hashes: the same objects give the same version again.
        (manifests / "net.yaml").unlink()
        first = manifests / "..2026_11_26_1"
        first.mkdir()
        (first / "net.yaml").write_text(NET.format(name="internet", policy="Allow"))
        (manifests / "..data").symlink_to(first.name)
        (manifests / "net.yaml").symlink_to("..data/net.yaml")
        await settle(client, server, want=allow_version)
        second = manifests / "..2026_11_26_2"
        second.mkdir()
        (second / "net.yaml").write_text(NET.format(name="internet", policy="Deny"))
        (manifests / "..data_tmp").symlink_to(second.name)
        (manifests / "..data_tmp").replace(manifests / "..data")
        await settle(client, server, want=deny_version)
    finally:
        await client.close()
        await channel.close()


async def test_a_burst_is_coalesced(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    client, channel = await connect(server)
    first_version = server.cache.get_snapshot("app").type_version(LISTENER)  # type: ignore[union-attr]
    manifests = Path(server.config.manifests[0])
    caplog.set_level(logging.INFO, logger="egress_xds.serve")
    try:
        for i in range(30):
            (manifests / f"burst-{i}.yaml").write_text(NET.format(name=f"a{i:02d}", policy="Deny"))
        deadline = time.monotonic() + 5
        while True:  # the sidecar ends on the version that holds the whole burst
            assert time.monotonic() < deadline, "the burst never fully arrived"
            response = await client.recv(timeout=3)
            await client.ack(response)
            assert response.version_info != first_version
            for _ in range(100):  # statuses are written just after the snapshots are pushed
                if len(server.control_plane.status()["objects"]) == 31:
                    break
                await asyncio.sleep(0.02)
            final = server.cache.get_snapshot("app")
            assert final is not None
            if (len(server.control_plane.status()["objects"]) == 31
                    and response.version_info == final.type_version(LISTENER)):
                break
        for _ in range(100):  # the reload logs once every namespace is installed
            reloads = [r for r in caplog.records if r.getMessage() == "config reloaded"]
            if reloads:
                break
            await asyncio.sleep(0.02)
        assert 1 <= len(reloads) < 30
    finally:
        await client.close()
        await channel.close()


async def test_debug_endpoint(server: Server, tmp_path: Path) -> None:
    manifests = Path(server.config.manifests[0])
    (manifests / "broken.yaml").write_text("kind: [oops\n")
    client, channel = await connect(server, "app")
    try:
        await asyncio.sleep(0)
        # Wait for the broken file to be seen.
        for _ in range(100):
            status = json.loads((await get(server, "/debug/status"))[1])
            if status["errors"]:
                break
            await asyncio.sleep(0.02)
        assert set(status) == {"objects", "errors"}
        assert status["errors"][0]["file"] == str(manifests / "broken.yaml")
        assert set(status["errors"][0]) == {"file", "kind", "namespace", "name", "field", "message"}
        obj = status["objects"][0]
        assert (obj["kind"], obj["namespace"], obj["name"]) == ("EgressNetwork", "app", "internet")
        assert {"type", "status", "reason", "message"} <= set(obj["conditions"][0])

        code, text = await get(server, "/debug/snapshots")
        snapshots = json.loads(text)["snapshots"]
        assert code == 200 and "app" in snapshots
        assert snapshots["app"]["version"] == server.cache.get_snapshot("app").version  # type: ignore[union-attr]
        assert snapshots["app"]["bytes"] > 0 and snapshots["app"]["resources"]["listeners"] == 1

        # The full config has the same form as `egress-xds translate -o json`.
        code, text = await get(server, "/debug/snapshots/app")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "egress_xds.cli", "translate", "-f", str(manifests / "net.yaml"), "-n", "app",
            "-o", "json", "--outbound-port", "15001", stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert json.loads(text) == json.loads(out)
        assert (await get(server, "/debug/snapshots/nowhere"))[0] == 404

        proxies = json.loads((await get(server, "/debug/proxies"))[1])["proxies"]
        assert [(p["namespace"], p["mode"], p["types"]["listeners"]["state"]) for p in proxies] == [
            ("app", "sotw", "SYNCED")]
        code, metrics = await get(server, "/metrics")
        for name in ("egress_xds_connected_proxies", "egress_xds_pushes_total", "egress_xds_push_latency_seconds",
                     "egress_xds_nacks", "egress_xds_translation_seconds", 'egress_xds_config_bytes{namespace="app"}'):
            assert name in metrics, name
        assert await get(server, "/healthz") == (200, "ok\n")
        assert (await get(server, "/readyz"))[0] == 200
    finally:
        await client.close()
        await channel.close()


async def test_unknown_namespace_gets_the_global_view_on_demand(server: Server) -> None:
    assert server.cache.get_snapshot("newcomer") is None
    client, channel = await connect(server, "newcomer")
    try:
        assert server.cache.get_snapshot("newcomer") is not None
    finally:
        await client.close()
        await channel.close()
