"""Issue 7, load (bounded): 1,000 ADS streams connecting and disconnecting in waves.

Each round opens 1,000 SotW streams at once over a few channels (each gets its clusters),
changes the snapshot while they are all open (each gets the change), then drops them all, half
by cancelling and half by half-closing. After every round the server holds nothing for them:
no stream, no handler, no cache watcher, gauge back to 0. A well-behaved stream stays open
the whole time and keeps getting updates. Rounds are timed; the whole test is bounded (~10 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from egress_xds.cache import Snapshot
from egress_xds.resources import CLUSTER
from egress_xds.server.ads import Limits
from tests.feature.feature_xds import AdsClient, names, node, world
from tests.limits.test_limits import running, update_latency

STREAMS = 1000
ROUNDS = 3
CHANNELS = 8


async def test_a_thousand_streams_come_and_go(record_property: Any) -> None:
    async with running(Limits()) as env:
        [steady] = await env.synced(1)
        channels = [grpc.aio.insecure_channel(env.target, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(CHANNELS)]
        timings = []
        try:
            for round_ in range(ROUNDS):
                started = time.monotonic()
                clients = [AdsClient(channels[i % CHANNELS]) for i in range(STREAMS)]
                await asyncio.gather(*(c.send(node=node("app", f"churn-{round_}-{i}"), type_url=CLUSTER)
                                       for i, c in enumerate(clients)))
                firsts = await asyncio.gather(*(c.recv(timeout=30) for c in clients))
                await asyncio.gather(*(c.ack(r) for c, r in zip(clients, firsts, strict=True)))
                opened = time.monotonic()
                assert len(env.ads.streams) == STREAMS + 1

                env.version += 1
                env.cache.set_snapshot("app", Snapshot(world(clusters=("c1", f"c{env.version + 1}"))))
                changes = await asyncio.gather(*(c.recv(timeout=30) for c in [steady, *clients]))
                assert all(f"c{env.version + 1}" in names(r) for r in changes)
                await steady.ack(changes[0])
                pushed = time.monotonic()

                for i, c in enumerate(clients):
                    if i % 2:
                        c.call.cancel()
                    else:
                        await c.call.done_writing()
                for _ in range(300):
                    if len(env.ads.streams) == 1 and env.ads._active == 1:
                        break
                    await asyncio.sleep(0.05)
                for c in clients:
                    await c.close()
                closed = time.monotonic()
                assert [s.node_id for s in env.ads.streams.values()] == ["sidecar~1"]
                assert env.ads._active == 1
                assert len(env.cache._watchers["app"].callbacks) == 1
                assert env.ads.metrics.connected_proxies.labels("sotw")._value.get() == 1
                timings.append((opened - started, pushed - opened, closed - pushed))
            # The steady stream is still served.
            assert await update_latency(env, [steady]) < 1.0
        finally:
            for ch in channels:
                await ch.close()
        for i, (o, p, c) in enumerate(timings):
            record_property(f"round{i}_open_s", round(o, 2))
            record_property(f"round{i}_push_all_s", round(p, 3))
            record_property(f"round{i}_close_s", round(c, 2))
        print("\n" + "\n".join(f"round {i}: {STREAMS} streams open+synced {o:.2f}s, one change to all "
                               f"{p * 1000:.0f} ms, all gone {c:.2f}s" for i, (o, p, c) in enumerate(timings)))

