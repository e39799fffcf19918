"""Limits and malformed input on the ADS server (issue 7): each hits one stream only.

The ADS server runs in-process (``AdsServer`` with small ``Limits``) on loopback; a few
well-behaved streams stay open throughout and must keep getting updates promptly while
another stream floods, sends oversized, undecodable or nonsensical requests, or while the
server is full. Every limit ends the offending stream with a gRPC status and one ``limit
hit`` / ``malformed request`` warning naming it. ``test_serve_flags`` checks that ``serve``'s
flags reach the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from egress_xds.cache import Snapshot, SnapshotCache
from egress_xds.cli import build_parser
from egress_xds.resources import CLUSTER, ROUTE
from egress_xds.serve import ServeConfig, Server
from egress_xds.server.ads import SERVICE, AdsServer, Limits
from tests.feature.feature_xds import AdsClient, ads_on_loopback, names, node, world

SOTW = f"/{SERVICE}/StreamAggregatedResources"


@dataclass
class Env:
    cache: SnapshotCache
    ads: AdsServer
    channel: grpc.aio.Channel
    target: str = ""
    clients: list[AdsClient] = field(default_factory=list)
    version: int = 0

    async def open(self, namespace: str = "app", type_url: str = CLUSTER, **extra: Any) -> AdsClient:
        client = AdsClient(self.channel)
        self.clients.append(client)
        try:
            await client.send(node=node(namespace, f"sidecar~{len(self.clients)}"), type_url=type_url, **extra)
        except grpc.aio.AioRpcError:
            pass  # refused before the request went out: the reader records it
        return client

    async def synced(self, n: int = 2) -> list[AdsClient]:
        """``n`` well-behaved clients that hold the current clusters and acked them."""
        good = []
        for _ in range(n):
            client = await self.open()
            await client.ack(await client.recv())
            good.append(client)
        return good

    def bump(self) -> None:
        self.version += 1
        self.cache.set_snapshot("app", Snapshot(world(clusters=("c1", f"c{self.version + 1}"))))


@asynccontextmanager
async def running(limits: Limits) -> AsyncIterator[Env]:
    cache = SnapshotCache()
    cache.set_snapshot("app", Snapshot(world()))
    ads = AdsServer(cache, limits=limits)
    options = [("grpc.max_receive_message_length", 2 * limits.max_message_bytes)]
    async with ads_on_loopback(ads, options) as (target, channel):
        env = Env(cache, ads, channel, target)
        try:
            yield env
        finally:
            for c in env.clients:
                await c.close()


async def ended(client: AdsClient, timeout: float = 5.0) -> grpc.aio.AioRpcError:
    await asyncio.wait_for(client.done.wait(), timeout)
    assert client.error is not None, "the stream ended without an error"
    return client.error


async def update_latency(env: Env, good: list[AdsClient]) -> float:
    """Seconds from a snapshot change until every good client got (and acked) it."""
    started = time.monotonic()
    env.bump()
    for client in good:
        response = await client.recv(timeout=2)
        assert response.type_url == CLUSTER and f"c{env.version + 1}" in names(response)
        await client.ack(response)
    return time.monotonic() - started


def hits(caplog: pytest.LogCaptureFixture, event: str) -> list[Any]:
    return [r for r in caplog.records if r.getMessage().startswith(event)]


async def test_max_streams(caplog: pytest.LogCaptureFixture) -> None:
    async with running(Limits(max_streams=3)) as env:
        good = await env.synced(3)
        extra = await env.open()
        err = await ended(extra)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams" in err.details()
        [hit] = hits(caplog, "limit hit: max streams")
        assert hit.max_streams == 3
        assert await update_latency(env, good) < 1.0
        await good[0].close()
        for _ in range(100):
            if env.ads._active < 3:
                break
            await asyncio.sleep(0.02)
        again = await env.open()
        assert (await again.recv()).type_url == CLUSTER


async def test_flooding_client_is_cut_off_and_others_are_not_delayed(
        caplog: pytest.LogCaptureFixture, record_property: Any) -> None:
    async with running(Limits(max_requests_per_second=50, burst=20)) as env:
        good = await env.synced(2)
        baseline = await update_latency(env, good)
        flooder = await env.open()
        await flooder.recv()
        sent = 0

        async def flood() -> None:
            nonlocal sent
            try:
                while sent < 100_000:  # stale requests in a tight loop, until the server ends it
                    await flooder.send(type_url=CLUSTER, response_nonce="stale")
                    sent += 1
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return
            raise AssertionError("the flooding stream was never ended")

        task = asyncio.create_task(flood())
        await asyncio.sleep(0.05)
        during = await update_latency(env, good)
        await ended(flooder)
        await asyncio.wait_for(task, 5)
        # (The flooder's own gRPC reports its failed write, not the server's status, which
        # test_rate_limit_status checks.) The server ended that stream and only that one.
        assert len(env.ads.streams) == 2
        [hit] = hits(caplog, "limit hit: request rate")
        assert hit.max_requests_per_second == 50 and hit.namespace == "app"
        assert during < 0.5, f"an update took {during:.3f}s while a client flooded (baseline {baseline:.3f}s)"
        assert all(not c.done.is_set() for c in good)
        record_property("update_latency_baseline_ms", round(baseline * 1000, 1))
        record_property("update_latency_during_flood_ms", round(during * 1000, 1))
        print(f"flooder sent {sent} requests before RESOURCE_EXHAUSTED; update latency "
              f"{baseline * 1000:.1f} ms before, {during * 1000:.1f} ms during the flood")


async def test_rate_limit_status() -> None:
    async with running(Limits(max_requests_per_second=0.01, burst=3)) as env:
        client = await env.open()
        await client.ack(await client.recv())
        await client.send(type_url=CLUSTER, response_nonce="stale")
        await client.send(type_url=CLUSTER, response_nonce="stale")  # the 4th request
        err = await ended(client)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert err.details() == ("more than 0.01 requests per second on one ADS stream "
                                 "(burst 3; --max-requests-per-second)")


async def test_a_normal_client_stays_under_the_default_rate() -> None:
    async with running(Limits()) as env:
        good = await env.synced(1)
        for _ in range(30):
            await update_latency(env, good)
        assert not good[0].done.is_set()


async def test_oversized_requests(caplog: pytest.LogCaptureFixture) -> None:
    limit = 64 * 1024
    async with running(Limits(max_message_bytes=limit)) as env:
        good = await env.synced(2)
        huge = [f"route-{i:06d}" for i in range(7_000)]  # ~98 KB: over the limit, under the backstop
        # As the first request, and on a stream that already works.
        first = await env.open(type_url=ROUTE, resource_names=huge)
        later = await env.open()
        await later.ack(await later.recv())
        await later.send(type_url=ROUTE, resource_names=huge)
        for client in (first, later):
            err = await ended(client)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
            assert f"larger than {limit} (--max-message-bytes)" in err.details()
        assert len(hits(caplog, "limit hit: message size")) == 2
        # Beyond gRPC's own backstop (twice the limit) gRPC refuses it too.
        beyond = await env.open(type_url=ROUTE, resource_names=huge * 3)
        assert (await ended(beyond)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A long name list under the limit is answered with the names that exist.
        many = await env.open(type_url=ROUTE, resource_names=["r1", *huge[:3000]])
        assert names(await many.recv()) == ["r1"]
        assert await update_latency(env, good) < 1.0


async def test_undecodable_requests(caplog: pytest.LogCaptureFixture) -> None:
    async with running(Limits()) as env:
        good = await env.synced(1)
        raw = env.channel.stream_stream(SOTW, request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
        valid = discovery_pb2.DiscoveryRequest(node=node("app"), type_url=CLUSTER).SerializeToString()
        for messages in ([b"\xff\xff\xff\xff garbage"], [valid, b"\x0a\xff\xff\xff"]):
            call = raw()
            for message in messages:
                await call.write(message)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                for _ in range(3):
                    await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert "malformed DiscoveryRequest" in info.value.details()
        assert len(hits(caplog, "malformed request")) == 2
        assert await update_latency(env, good) < 1.0


async def test_garbage_and_unknown_type_urls(caplog: pytest.LogCaptureFixture) -> None:
    async with running(Limits(max_types_per_stream=8)) as env:
        good = await env.synced(1)
        client = await env.open(type_url="garbage")
        for type_url in ("garbage", "type.googleapis.com/google.protobuf.Empty", ""):
            if type_url != "garbage":
                await client.send(type_url=type_url)
            response = await client.recv()
            assert (response.type_url, list(response.resources)) == (type_url, [])
        await client.send(type_url=CLUSTER)  # the stream still works
        assert names(await client.recv()) == ["c1"]
        # Each type URL costs state: a 9th one (with 4 held) ends the stream.
        for i in range(5):
            await client.send(type_url=f"type.googleapis.com/junk.T{i}")
        err = await ended(client)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "type URLs" in err.details()
        assert hits(caplog, "limit hit: type URLs per stream")
        assert await update_latency(env, good) < 1.0


def test_serve_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import egress_xds.serve as serve_module

    args = build_parser().parse_args(["serve"])
    assert (args.max_streams, args.max_message_bytes, args.max_requests_per_second) == (10_000, 4 << 20, 100.0)
    seen: list[ServeConfig] = []

    async def fake_serve(config: ServeConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(serve_module, "serve", fake_serve)
    monkeypatch.setattr(serve_module, "setup_logging", lambda level: None)
    args = build_parser().parse_args(["serve", "--max-streams", "7", "--max-message-bytes", "1000",
                                      "--max-requests-per-second", "3", "--tls-cert", "c.pem",
                                      "--tls-key", "k.pem", "--client-ca", "ca.pem", "--trust-domain", "td"])
    assert serve_module.cmd_serve(args) == 0
    [config] = seen
    assert (config.max_streams, config.max_message_bytes, config.max_requests_per_second) == (7, 1000, 3.0)
    assert (config.tls_cert, config.tls_key, config.client_ca, config.trust_domain) == ("c.pem", "k.pem", "ca.pem", "td")
    server = Server(ServeConfig(max_streams=7, max_message_bytes=1000, max_requests_per_second=3))
    assert server.ads.limits == Limits(max_streams=7, max_requests_per_second=3, burst=6, max_message_bytes=1000)
    assert ("grpc.max_receive_message_length", 2000) in server.config.grpc_options()
    for bad in (["--max-message-bytes", "0"], ["--max-streams", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])
