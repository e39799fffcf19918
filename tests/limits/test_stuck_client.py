"""Issue 7, faults: a stuck client (never reads) does not delay other streams, and what the
server holds for it stays bounded.

The stuck client subscribes to clusters, listeners and routes, never reads a response, and
blindly "acknowledges" the last nonce the server used for each type, read from the server's
state (so the server is free to push each change). Snapshots of ~1 MB change 40 times; two well-behaved streams must get each
change promptly, and the server must not queue responses for the stuck one: its writer waits
on gRPC flow control, so at most a few responses are ever produced for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from egress_xds.cache import Snapshot
from egress_xds.resources import CLUSTER, LISTENER, ROUTE
from egress_xds.server.ads import Limits
from tests.feature.feature_xds import node, unpack, world
from tests.limits.test_limits import running

CHANGES = 40
BIG = "x" * 1_000_000  # a response header value: every route response is ~1 MB


async def test_stuck_client_does_not_delay_others_and_stays_bounded(record_property: Any) -> None:
    async with running(Limits(max_requests_per_second=0)) as env:
        env.cache.set_snapshot("app", Snapshot(world(header=BIG + "0")))
        good = await env.synced(2)
        for client in good:  # the good ones also hold the routes
            await client.send(type_url=ROUTE, resource_names=["r1"])
            await client.ack(await client.recv(), names=["r1"])
        # A raw call that is written to and never read.
        stuck = ads_pb2_grpc.AggregatedDiscoveryServiceStub(env.channel).StreamAggregatedResources()
        await stuck.write(DiscoveryRequest(node=node("app", "stuck"), type_url=CLUSTER))
        for type_url, names_ in ((LISTENER, []), (ROUTE, ["r1"])):
            await stuck.write(DiscoveryRequest(type_url=type_url, resource_names=names_))
        for _ in range(100):
            mine = [s for s in env.ads.streams.values() if s.node_id == "stuck"]
            if mine and len(mine[0].types) == 3:
                break
            await asyncio.sleep(0.02)
        [stream] = mine

        def built() -> int:  # responses the server built for it
            return stream.responses_built

        latencies = []
        halfway = 0
        for version in range(1, CHANGES + 1):
            if version == CHANGES // 2:
                halfway = built()
            # Blind ACKs: of the last nonce the server used for each type, read from its
            # state (the client never reads a response).
            for type_url in (CLUSTER, LISTENER, ROUTE):
                sent = stream.types[type_url]
                if sent.nonce is not None:
                    await stuck.write(DiscoveryRequest(type_url=type_url, response_nonce=sent.nonce,
                                                       version_info=sent.version_sent or "",
                                                       resource_names=["r1"] if type_url == ROUTE else []))
            started = time.monotonic()
            env.cache.set_snapshot("app", Snapshot(world(header=BIG + str(version))))
            for client in good:  # only the route changed (its response header)
                response = await client.recv(timeout=3)
                assert response.type_url == ROUTE
                header = unpack(response.resources[0]).response_headers_to_add[0].header.value  # type: ignore[attr-defined]
                assert header == BIG + str(version)
                await client.ack(response, names=["r1"])
            latencies.append(time.monotonic() - started)

        produced = built()
        worst = max(latencies)
        record_property("stuck_client_responses_built", produced)
        record_property("good_update_latency_max_ms", round(worst * 1000, 1))
        print(f"\nstuck client: {produced} responses built (at most {produced + 1} MB) for it over {CHANGES} changes of ~1 MB; "
              f"good streams' update latency max {worst * 1000:.1f} ms, "
              f"median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms")
        # Flow control stops its writer once gRPC's buffers and the HTTP/2 window are full
        # (a few MB); from then on nothing more is built for it, however many changes come.
        assert produced == halfway, f"still building responses for a client that never reads: {halfway} -> {produced}"
        assert produced < 30
        assert worst < 1.0, f"an update took {worst:.3f}s while a client was stuck"
        assert all(not c.done.is_set() for c in good)
        stuck.cancel()
