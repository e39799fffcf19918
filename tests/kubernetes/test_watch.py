"""``serve --kubernetes`` in-process against the fake API server: list/watch reaches snapshots.

The official ``kubernetes`` client, unmodified, talks HTTP to ``fake_apiserver``; what we
observe is what a sidecar would get: the translator's verdicts, the served snapshot versions
and ``/debug/status``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from egress_xds.serve import ServeConfig, Server
from egress_xds.server.admin import ExplainQuery
from egress_xds.sources.kubernetes import KubernetesSource
from tests.kubernetes.conftest import egress_network, eventually_async, fast_config, route, service
from tests.kubernetes.fake_apiserver import FakeApiServer


@pytest.fixture
async def server(fake: FakeApiServer, kubeconfig: Path) -> AsyncIterator[Server]:
    fake.apply(egress_network("internet", "linkerd-egress", "Deny"))
    srv = Server(ServeConfig(ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0",
                             kubernetes=fast_config(kubeconfig)))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def verdict(server: Server, namespace: str, ip: str, port: int, **kw: Any) -> dict[str, Any]:
    """What a sidecar in ``namespace`` gets, from the world being served (under its lock)."""
    return await server.control_plane.explain(ExplainQuery(namespace, ip, port, **kw))


async def is_(server: Server, namespace: str, ip: str, port: int, key: str, value: Any, **kw: Any) -> bool:
    return (await verdict(server, namespace, ip, port, **kw))[key] == value


def source(server: Server) -> KubernetesSource:
    assert isinstance(server.source, KubernetesSource)
    return server.source


async def test_added_changed_deleted_objects_reach_the_snapshot(server: Server, fake: FakeApiServer) -> None:
    assert server.ready()
    first = await verdict(server, "app", "203.0.113.10", 80, host="example.com", path="/")
    assert (first["egress_network"], first["action"]) == ("linkerd-egress/internet", "deny")
    version = server.cache.get_snapshot("linkerd-egress").version  # type: ignore[union-attr]

    # added: a producer route opens port 80
    fake.apply(route("HTTPRoute", "open-80", "linkerd-egress", "internet", 80))
    await eventually_async(lambda: is_(server, "app", "203.0.113.10", 80, "action", "forward", host="example.com"))
    await eventually_async(lambda: server.cache.get_snapshot("linkerd-egress").version != version)  # type: ignore[union-attr]

    # changed: the EgressNetwork now only covers 198.51.100.0/24
    fake.apply(egress_network("internet", "linkerd-egress", "Deny", networks=[{"cidr": "198.51.100.0/24"}]))
    await eventually_async(lambda: is_(server, "app", "203.0.113.10", 443, "egress_network", None, sni="x.example.com"))
    assert (await verdict(server, "app", "198.51.100.7", 443, sni="x.example.com"))["action"] == "deny"

    # deleted: nothing governs the namespace any more (fallback forwards)
    fake.delete("EgressNetwork", "linkerd-egress", "internet")
    await eventually_async(lambda: is_(server, "app", "198.51.100.7", 443, "egress_network", None, sni="x"))
    assert (await verdict(server, "app", "198.51.100.7", 443, sni="x"))["action"] == "forward"


async def test_a_410_in_the_middle_of_a_watch_loses_no_deletion(server: Server, fake: FakeApiServer) -> None:
    fake.apply(egress_network("partners", "linkerd-egress", "Allow", networks=[{"cidr": "203.0.113.0/25"}]))
    await eventually_async(lambda: is_(server, "app", "203.0.113.10", 22, "egress_network", "linkerd-egress/partners"))
    relists = {r.kind.kind: r.relists for r in source(server).reflectors}

    # The DELETED event never reaches the watch: it is held back, then history is compacted
    # and the watch gets ERROR 410. Only the re-list (and its diff) can notice the deletion.
    fake.pause_watches()
    fake.delete("EgressNetwork", "linkerd-egress", "partners")
    fake.compact()
    fake.expire_watches()
    fake.pause_watches(False)

    await eventually_async(lambda: is_(server, "app", "203.0.113.10", 22, "egress_network", "linkerd-egress/internet"))
    reflector = next(r for r in source(server).reflectors if r.kind.kind == "EgressNetwork")
    assert reflector.relists > relists["EgressNetwork"]
    assert ("linkerd-egress", "partners") not in reflector.store


async def test_watches_resume_from_bookmarks(server: Server, fake: FakeApiServer) -> None:
    # Changes to other kinds move the resourceVersion; TCPRoute's watch only sees bookmarks.
    # When its watch ends (timeoutSeconds), it resumes from the bookmark's resourceVersion
    # instead of its old one.
    start = len(fake.requests)
    for i in range(3):
        fake.apply(service(f"svc-{i}", "app", f"10.96.0.{i + 1}", 80))
    moved_to = fake.rv

    def resumed() -> bool:
        watches = [r for r in fake.requests[start:] if r["method"] == "WATCH" and r["path"].endswith("/tcproutes")]
        return any(int(r["query"].get("resourceVersion") or 0) >= moved_to for r in watches)

    await eventually_async(resumed, timeout=15)
    queries = [r["query"] for r in fake.requests if r["method"] == "WATCH"]
    assert all(q.get("allowWatchBookmarks") == "true" and q.get("timeoutSeconds") for q in queries)


async def test_a_missing_crd_is_tolerated_and_retried(fake: FakeApiServer, kubeconfig: Path) -> None:
    fake.uninstall("tlsroutes")
    fake.apply(egress_network("internet", "linkerd-egress", "Deny"))
    srv = Server(ServeConfig(ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0",
                             kubernetes=fast_config(kubeconfig)))
    await srv.start()
    try:
        assert srv.ready()
        assert (await verdict(srv, "app", "203.0.113.10", 443, sni="api.example.com"))["action"] == "deny"
        fake.install("tlsroutes")
        fake.apply(route("TLSRoute", "api", "linkerd-egress", "internet", 443, hostnames=["api.example.com"]))
        await eventually_async(lambda: is_(srv, "app", "203.0.113.10", 443, "action", "forward", sni="api.example.com"))
    finally:
        await srv.stop()


async def test_an_invalid_update_keeps_the_previous_version_and_is_reported(server: Server,
                                                                           fake: FakeApiServer) -> None:
    import aiohttp

    bad = egress_network("internet", "linkerd-egress", "Deny",
                         networks=[{"cidr": "203.0.113.0/24", "except": ["198.51.100.0/25"]}])
    fake.apply(bad)

    async def errors() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(server.debug_url + "/debug/status") as r:
            body: dict[str, Any] = await r.json()
            return body["errors"]

    for _ in range(100):
        found = [e for e in await errors() if e["name"] == "internet"]
        if found:
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert found and found[0]["file"] == "" and "does not include exception" in found[0]["message"]
    # the previous version (Deny everything outside the cluster networks) is still in force
    assert (await verdict(server, "app", "8.8.8.8", 443, sni="x"))["action"] == "deny"


async def test_a_connected_sidecar_gets_its_namespace_and_every_change(server: Server, fake: FakeApiServer) -> None:
    """Namespaces come from ``node.metadata.namespace`` as in file mode; an API change is pushed."""
    import time

    import grpc

    from egress_xds.resources import LISTENER
    from tests.feature.feature_xds import AdsClient, node

    channel = grpc.aio.insecure_channel(server.ads_address)
    client = AdsClient(channel)
    try:
        await client.send(node=node("shop"), type_url=LISTENER)
        first = await client.recv()
        await client.ack(first)
        assert first.resources  # the global-egress view of a namespace without objects
        started = time.monotonic()
        fake.apply(egress_network("shop-egress", "shop", "Allow"))  # shop now has its own network
        pushed = await client.recv(timeout=5)
        await client.ack(pushed)
        assert pushed.version_info != first.version_info
        print("API change -> push latency (s):", round(time.monotonic() - started, 4))
        assert (await verdict(server, "shop", "203.0.113.10", 22))["egress_network"] == "shop/shop-egress"
    finally:
        await client.close()
        await channel.close()


async def test_an_unreachable_api_server_fails_start_closed(fake: FakeApiServer, kubeconfig: Path) -> None:
    """Serving an empty world would let every connection out: start fails instead."""
    fake.down = True
    srv = Server(ServeConfig(ads_listen="127.0.0.1:0", debug_listen="127.0.0.1:0",
                             kubernetes=fast_config(kubeconfig, initial_sync_timeout=1.0)))
    with pytest.raises(RuntimeError, match="cannot list EgressNetwork"):
        await srv.start()
    assert not srv.ready()
