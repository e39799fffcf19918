"""The admin API against a live ``serve`` (in-process): explain, snapshot, proxies, status, watch."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
import pytest

from egress_xds import cli
from egress_xds.admin import convert
from egress_xds.admin.v1 import admin_pb2, admin_pb2_grpc
from egress_xds.resources import LISTENER, PUSH_ORDER
from egress_xds.serve import DEFAULT_MANIFESTS, ServeConfig, Server
from egress_xds.translate import TranslatorOptions
from tests.admin.conftest import Live
from tests.feature.feature_xds import AdsClient, node

# (namespace, --to, extra explain arguments): every verdict kind and traffic kind.
CASES: list[tuple[str, str, list[str]]] = [
    ("web", "203.0.113.130:80", ["--host", "httpbin.example.com", "--path", "/post", "--method", "POST"]),
    ("app", "203.0.113.130:80", ["--host", "httpbin.example.com", "--path", "/post", "--method", "POST"]),
    ("app", "203.0.113.130:80", ["--host", "httpbin.example.com", "--path", "/get/x?a=1"]),
    ("app", "203.0.113.130:80", ["--host", "audit.example.com"]),
    ("app", "203.0.113.130:80", ["--path", "/headers"]),
    ("app", "203.0.113.130:443", ["--sni", "api.example.com"]),
    ("app", "203.0.113.130:443", ["--sni", "other.example.com"]),
    ("app", "203.0.113.130:443", ["--sni", ""]),
    ("app", "203.0.113.130:9000", []),
    ("app", "203.0.113.130:5432", []),
    ("app", "203.0.113.10:443", ["--sni", "partner.example.com"]),
    ("payments", "203.0.113.130:443", ["--sni", "api.example.com"]),
    ("app", "10.1.2.3:80", ["--host", "svc.local"]),
    ("app", "203.0.113.130:15001", []),
    ("app", "[2001:db8::1]:443", ["--sni", "api.example.com"]),
    ("nobody", "198.51.100.7:80", ["--host", "example.org"]),
]


def run_cli(args: Sequence[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(list(args))
    return code, out.getvalue()


async def test_explain_via_the_server_equals_explain_offline(live: Live) -> None:
    for namespace, to, extra in CASES:
        for output in ("json", "text"):
            base = ["explain", "-n", namespace, "--to", to, *extra, "-o", output]
            offline = await asyncio.to_thread(run_cli, [*base, "-f", str(DEFAULT_MANIFESTS)])
            online = await asyncio.to_thread(run_cli, [*base, "--server", live.server.admin_address])
            assert offline[0] == 0, (base, offline)
            assert online == offline, (base, offline, online)


async def test_explain_verdict_message_mirrors_the_json(live: Live) -> None:
    request = admin_pb2.ExplainRequest(namespace="app", ip="203.0.113.130", port=443)
    request.tls.sni = "nope.example.com"
    verdict = await live.admin.Explain(request, timeout=5)
    assert not verdict.HasField("destination") and verdict.action == "deny"
    assert convert.verdict_to_dict(verdict) == live.server.control_plane.translator.explain(
        "app", "203.0.113.130", 443, sni="nope.example.com")
    # An empty HttpRequest is an HTTP request (GET / to the IP), not opaque bytes.
    empty = admin_pb2.ExplainRequest(namespace="app", ip="203.0.113.130", port=80, http=admin_pb2.HttpRequest())
    assert "http traffic" in (await live.admin.Explain(empty, timeout=5)).reason
    # Headers reach the matcher.
    headers = admin_pb2.ExplainRequest(namespace="app", ip="203.0.113.130", port=80,
                                       http=admin_pb2.HttpRequest(host="x.example.com", headers={"X-A": "b"}))
    assert (await live.admin.Explain(headers, timeout=5)).action == "deny"


@pytest.mark.parametrize("request_fields, message", [
    ({"namespace": "", "ip": "1.2.3.4", "port": 80}, "namespace is required"),
    ({"namespace": "app", "ip": "not-an-ip", "port": 80}, "expected an IPv4 or IPv6 address"),
    ({"namespace": "app", "ip": "1.2.3.4", "port": 0}, "1-65535"),
    ({"namespace": "app", "ip": "1.2.3.4", "port": 70000}, "1-65535"),
])
async def test_explain_rejects_bad_requests(live: Live, request_fields: dict[str, Any], message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await live.admin.Explain(admin_pb2.ExplainRequest(**request_fields), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


async def debug_json(server: Server, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(server.debug_url + path) as response:
        assert response.status == 200
        return json.loads(await response.text())


async def test_get_snapshot_is_what_the_sidecars_get(live: Live) -> None:
    snapshot = live.server.cache.get_snapshot("web")
    assert snapshot is not None
    got = await live.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(namespace="web"), timeout=5)
    assert (got.namespace, got.version, got.size_bytes) == ("web", snapshot.version, snapshot.size_bytes)
    assert dict(got.type_versions) == snapshot.type_versions
    expected = [(t, n, e.hash) for t in PUSH_ORDER for n, e in sorted(snapshot.entries.get(t, {}).items())]
    assert [(r.type_url, r.name, r.version) for r in got.resources] == expected
    for resource in got.resources:
        message = snapshot.resources[resource.type_url][resource.name]
        assert resource.resource.type_url == resource.type_url
        assert resource.resource.value == message.SerializeToString(deterministic=True)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await live.admin.GetSnapshot(admin_pb2.GetSnapshotRequest(namespace="no-such-ns"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "web" in (err.value.details() or "")


async def test_get_status_equals_the_debug_endpoint(live: Live) -> None:
    (live.manifests / "broken.yaml").write_text(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\n"
        "metadata: {name: bad, namespace: app}\nspec: {trafficPolicy: Sometimes}\n")
    await live.server.control_plane.reload()
    report = await live.admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=5)
    expected = await debug_json(live.server, "/debug/status")
    assert expected["errors"], "the broken manifest is reported"
    assert convert.status_to_dict(report) == expected
    assert json.dumps(convert.status_to_dict(report)) == json.dumps(expected)  # key order too


async def connect(live: Live, namespace: str, node_id: str, delta: bool = False) -> tuple[AdsClient, grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(live.server.ads_address)
    client = AdsClient(channel, delta=delta)
    await client.send(node=node(namespace, node_id), type_url=LISTENER)
    return client, channel


async def test_list_proxies_equals_the_debug_endpoint_and_status_prints_the_same(live: Live) -> None:
    client, channel = await connect(live, "web", "sidecar~web")
    other, other_channel = await connect(live, "app", "sidecar~app", delta=True)
    try:
        await client.ack(await client.recv())
        await other.ack(await other.recv())
        # A NACK, so that last_nack is filled in.
        live.server.cache.set_snapshot("app", live.server.cache.get_snapshot("web"))  # type: ignore[arg-type]
        response = await other.recv()
        await other.send(type_url=response.type_url, response_nonce=response.nonce,
                         error_detail={"code": 3, "message": "rejected for the test"})
        await asyncio.sleep(0.1)
        listed = await live.admin.ListProxies(admin_pb2.ListProxiesRequest(), timeout=5)
        expected = (await debug_json(live.server, "/debug/proxies"))["proxies"]
        got = [convert.proxy_to_dict(p) for p in listed.proxies]
        assert json.dumps(got) == json.dumps(expected)
        assert any(t["last_nack"] for p in got for t in p["types"].values())
        only_web = await live.admin.ListProxies(admin_pb2.ListProxiesRequest(namespace="web"), timeout=5)
        assert [p.node_id for p in only_web.proxies] == ["sidecar~web"]

        for output in ("table", "json"):
            from_debug = await asyncio.to_thread(run_cli, ["status", "--debug-url", live.server.debug_url, "-o", output])
            from_admin = await asyncio.to_thread(run_cli, ["status", "--server", live.server.admin_address, "-o", output])
            assert from_admin == from_debug
            assert "sidecar~web" in from_admin[1]
    finally:
        await client.close()
        await other.close()
        await channel.close()
        await other_channel.close()


async def next_event(call: Any, timeout: float = 3.0) -> admin_pb2.ProxyEvent:
    event = await asyncio.wait_for(call.read(), timeout)
    assert event is not grpc.aio.EOF
    return event  # type: ignore[no-any-return]


async def test_watch_proxies_streams_connects_changes_and_disconnects(live: Live) -> None:
    call = live.admin.WatchProxies(admin_pb2.WatchProxiesRequest())
    first = await next_event(call)
    assert first.kind == admin_pb2.ProxyEvent.CURRENT and not first.proxies
    client, channel = await connect(live, "web", "sidecar~watch")
    try:
        connected = await next_event(call)
        assert connected.kind == admin_pb2.ProxyEvent.CONNECTED
        assert [p.node_id for p in connected.proxies] == ["sidecar~watch"]
        await client.ack(await client.recv())  # not acked before: it cannot be SYNCED yet
        state = ""
        while state != "SYNCED":
            event = await next_event(call)
            assert event.kind == admin_pb2.ProxyEvent.CHANGED
            assert [p.node_id for p in event.proxies] == ["sidecar~watch"]
            state = {t.type: t.state for t in event.proxies[0].types}["listeners"]

        # A second watch starts with the sidecar in CURRENT; a namespace filter hides it.
        other = live.admin.WatchProxies(admin_pb2.WatchProxiesRequest())
        current = await next_event(other)
        assert current.kind == admin_pb2.ProxyEvent.CURRENT and [p.node_id for p in current.proxies] == ["sidecar~watch"]
        other.cancel()
        filtered = live.admin.WatchProxies(admin_pb2.WatchProxiesRequest(namespace="app"))
        assert not (await next_event(filtered)).proxies

        await client.close()
        event = await next_event(call)
        while event.kind == admin_pb2.ProxyEvent.CHANGED:
            event = await next_event(call)
        assert event.kind == admin_pb2.ProxyEvent.DISCONNECTED and event.proxies[0].node_id == "sidecar~watch"
        with pytest.raises(asyncio.TimeoutError):  # the filtered watch saw nothing of it
            await asyncio.wait_for(filtered.read(), 0.2)
        filtered.cancel()
    finally:
        await client.close()
        await channel.close()
    call.cancel()
    for _ in range(100):  # cancelled watches leave; the poller stops with the last one
        if live.server.admin.watch.watchers == 0:
            break
        await asyncio.sleep(0.01)
    assert live.server.admin.watch.watchers == 0


async def test_watch_is_bounded_and_ends_ok_on_shutdown(tmp_path: Any) -> None:
    server = Server(ServeConfig(ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0", watch=False,
                                admin_listen="127.0.0.1:0", options=TranslatorOptions()))
    server.admin.max_watches = 2
    await server.start()
    channel = grpc.aio.insecure_channel(server.admin_address)
    try:
        assert server.admin_address != server.ads_address
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        calls = [stub.WatchProxies(admin_pb2.WatchProxiesRequest()) for _ in range(2)]
        for call in calls:
            assert (await next_event(call)).kind == admin_pb2.ProxyEvent.CURRENT
        third = stub.WatchProxies(admin_pb2.WatchProxiesRequest())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await third.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # --admin-listen: the ADS port serves no admin API.
        async with grpc.aio.insecure_channel(server.ads_address) as ads_channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await admin_pb2_grpc.AdminServiceStub(ads_channel).ListProxies(admin_pb2.ListProxiesRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await asyncio.wait_for(server.stop(), 5)
        for call in calls:
            assert await asyncio.wait_for(call.read(), 3) is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await channel.close()
        await server.stop()
