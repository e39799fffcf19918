"""SotW ADS (StreamAggregatedResources) driven by an in-process gRPC client."""

from __future__ import annotations

import asyncio

import grpc

from egress_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.feature.feature_xds import names, node, unpack, world


async def test_node_without_namespace_is_refused(xds):
    client = xds.client()
    await client.send(node=node(None), type_url=CLUSTER)
    await asyncio.wait_for(client.done.wait(), 3)
    assert client.error is not None
    assert client.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.metadata.namespace" in client.error.details()


async def test_first_request_answered_ack_then_quiet(xds):
    snap = xds.set("ns1", world())
    client = xds.client()
    await client.send(node=node("ns1"), type_url=CLUSTER)
    clusters = await client.recv()
    assert clusters.type_url == CLUSTER and names(clusters) == ["c1"]
    assert clusters.version_info == snap.type_version(CLUSTER)
    await client.ack(clusters)
    await client.send(type_url=LISTENER)
    listeners = await client.recv()
    assert names(listeners) == ["http"]
    await client.ack(listeners)
    await client.send(type_url=ROUTE, resource_names=["r1"])
    routes = await client.recv()
    assert names(routes) == ["r1"]
    await client.ack(routes, names=["r1"])
    await client.nothing()
    states = {t: v["state"] for t, v in xds.ads.describe()[0]["types"].items()}
    assert states == {"clusters": "SYNCED", "listeners": "SYNCED", "routes": "SYNCED"}


async def test_reconnect_with_unknown_version_is_answered(xds):
    xds.set("ns1", world())
    client = xds.client()
    await client.send(node=node("ns1"), type_url=CLUSTER, version_info="from-another-server",
                      response_nonce="77")
    response = await client.recv()
    assert names(response) == ["c1"]


async def test_reconnect_with_current_version_is_still_answered(xds):
    snap = xds.set("ns1", world())
    client = xds.client()
    await client.send(node=node("ns1"), type_url=CLUSTER, version_info=snap.type_version(CLUSTER))
    response = await client.recv()
    assert response.version_info == snap.type_version(CLUSTER)


async def test_nack_is_recorded_not_resent_and_new_snapshot_is_sent(xds):
    xds.set("ns1", world(header="v1"))
    client = xds.client()
    await client.send(node=node("ns1"), type_url=LISTENER)
    first = await client.recv()
    await client.ack(first)
    await client.send(type_url=ROUTE, resource_names=["r1"])
    good = await client.recv()
    await client.ack(good, names=["r1"])
    xds.set("ns1", world(header="v2"))
    bad = await client.recv()
    assert bad.version_info != good.version_info
    await client.send(type_url=ROUTE, version_info=good.version_info, response_nonce=bad.nonce,
                      resource_names=["r1"], error_detail={"code": 3, "message": "rejected: v2"})
    await client.nothing()
    proxy = xds.ads.describe()[0]["types"]["routes"]
    assert proxy["state"] == "NACKED"
    assert proxy["version_acked"] == good.version_info
    assert proxy["last_nack"]["version"] == bad.version_info
    assert "rejected: v2" in proxy["last_nack"]["message"]
    assert b'egress_xds_nacks_total{type="routes"} 1.0' in xds.ads.metrics.render()
    # Same snapshot set again: nothing. A changed snapshot: sent.
    xds.set("ns1", world(header="v2"))
    await client.nothing()
    xds.set("ns1", world(header="v3"))
    fixed = await client.recv()
    assert unpack(fixed.resources[0]).response_headers_to_add[0].header.value == "v3"


async def test_stale_nonce_is_ignored(xds):
    xds.set("ns1", world())
    client = xds.client()
    await client.send(node=node("ns1"), type_url=LISTENER)
    first = await client.recv()
    await client.ack(first)
    xds.set("ns1", world(port=10081))
    second = await client.recv()
    # A NACK for the old nonce is stale: no effect, state stays as is.
    await client.send(type_url=LISTENER, version_info=first.version_info, response_nonce=first.nonce,
                      error_detail={"code": 3, "message": "late"})
    await client.nothing()
    assert xds.ads.describe()[0]["types"]["listeners"]["last_nack"] is None
    await client.ack(second)
    await client.nothing()
    assert xds.ads.describe()[0]["types"]["listeners"]["state"] == "SYNCED"


async def test_one_unacked_response_per_type_and_coalescing(xds):
    xds.set("ns1", world(port=10080))
    client = xds.client()
    await client.send(node=node("ns1"), type_url=LISTENER)
    first = await client.recv()
    for port in (10081, 10082, 10083):
        xds.set("ns1", world(port=port))
    await client.nothing()  # the first response is not acked yet
    await client.ack(first)
    latest = await client.recv()
    assert unpack(latest.resources[0]).address.socket_address.port_value == 10083
    await client.ack(latest)
    await client.nothing()


async def test_named_subscription_and_name_that_appears_later(xds):
    xds.set("ns1", world(eds=True, clusters=("c1",)))
    client = xds.client()
    await client.send(node=node("ns1"), type_url=ENDPOINT, resource_names=["c1", "c2"])
    first = await client.recv()
    assert names(first) == ["c1"]
    await client.ack(first, names=["c1", "c2"])
    await client.nothing()
    xds.set("ns1", world(eds=True, clusters=("c1", "c2")))
    second = await client.recv()
    assert names(second) == ["c1", "c2"]
    await client.ack(second, names=["c1", "c2"])
    # Unsubscribe c2 then subscribe it again: it is sent again.
    await client.ack(second, names=["c1"])
    third = await client.recv()
    assert names(third) == ["c1"]
    await client.ack(third, names=["c1", "c2"])
    fourth = await client.recv()
    assert names(fourth) == ["c1", "c2"]


async def test_wildcard_removal_is_a_complete_set(xds):
    xds.set("ns1", world(tcp_port=10090))
    client = xds.client()
    await client.send(node=node("ns1"), type_url=LISTENER, resource_names=["*"])
    first = await client.recv()
    assert names(first) == ["http", "tcp"]
    await client.ack(first)
    xds.set("ns1", world())
    second = await client.recv()
    assert names(second) == ["http"]


async def test_push_order_and_cluster_kept_until_listener_replaced(xds):
    xds.set("ns1", world(clusters=("old",), tcp_port=10090))
    client = xds.client()
    await client.send(node=node("ns1"), type_url=CLUSTER)
    await client.ack(await client.recv())
    await client.send(type_url=LISTENER)
    await client.ack(await client.recv())
    # Switch everything from cluster "old" to "new".
    xds.set("ns1", world(clusters=("new",), tcp_port=10090))
    clusters = await client.recv()
    assert clusters.type_url == CLUSTER
    assert names(clusters) == ["new", "old"]  # "old" is still named by the listener Envoy has
    listeners = await client.recv()
    assert listeners.type_url == LISTENER
    await client.ack(clusters)
    await client.nothing()  # "old" may go only after the new listeners are acked
    await client.ack(listeners)
    final = await client.recv()
    assert final.type_url == CLUSTER and names(final) == ["new"]


async def test_listener_waits_for_its_new_cluster(xds):
    xds.set("ns1", world(clusters=("a",), tcp_port=10090))
    client = xds.client()
    await client.send(node=node("ns1"), type_url=CLUSTER)
    c1 = await client.recv()
    await client.send(type_url=LISTENER)
    l1 = await client.recv()
    await client.ack(l1)
    # Clusters are un-acked: a new world cannot send its listeners before its clusters.
    xds.set("ns1", world(clusters=("b",), tcp_port=10090))
    await client.nothing()
    await client.ack(c1)
    order = [(await client.recv()).type_url for _ in range(2)]
    assert order == [CLUSTER, LISTENER]


async def test_two_namespaces_are_isolated(xds):
    xds.set("ns1", world(port=10001))
    xds.set("ns2", world(port=10002))
    a, b = xds.client(), xds.client()
    await a.send(node=node("ns1", "a"), type_url=LISTENER)
    await b.send(node=node("ns2", "b"), type_url=LISTENER)
    ra, rb = await a.recv(), await b.recv()
    assert unpack(ra.resources[0]).address.socket_address.port_value == 10001
    assert unpack(rb.resources[0]).address.socket_address.port_value == 10002
    await a.ack(ra)
    await b.ack(rb)
    xds.set("ns2", world(port=10003))
    assert unpack((await b.recv()).resources[0]).address.socket_address.port_value == 10003
    await a.nothing()


async def test_unseen_namespace_is_computed_on_demand(xds):
    calls = []

    async def compute(namespace):
        calls.append(namespace)
        from egress_xds.cache import Snapshot

        return Snapshot(world(port=10444))

    xds.cache.compute = compute
    client = xds.client()
    await client.send(node=node("fresh"), type_url=LISTENER)
    response = await client.recv()
    assert calls == ["fresh"]
    assert unpack(response.resources[0]).address.socket_address.port_value == 10444


async def test_stuck_client_does_not_block_others(xds):
    xds.set("ns1", world())
    stuck = xds.client()
    await stuck.send(node=node("ns1", "stuck"), type_url=LISTENER)
    await stuck.recv()  # never acked, never read again
    others = [xds.client() for _ in range(5)]
    for i, c in enumerate(others):
        await c.send(node=node("ns1", f"n{i}"), type_url=LISTENER)
        await c.ack(await c.recv())
    xds.set("ns1", world(port=10099))
    for c in others:
        assert unpack((await c.recv(timeout=1)).resources[0]).address.socket_address.port_value == 10099


async def test_streams_holding_the_whole_set_get_one_shared_response(xds):
    """Rule 11: the snapshot's complete set of a type goes out as the same bytes to every
    stream (its nonce names the snapshot and type), and ACKs of that nonce work."""
    xds.set("ns1", world())
    first, second = xds.client(), xds.client()
    got = []
    for client in (first, second):
        await client.send(node=node("ns1"), type_url=CLUSTER)
        got.append(await client.recv())
    assert got[0] == got[1] and not got[0].nonce.isdigit()
    body = xds.cache.get_snapshot("ns1").views[("sotw", CLUSTER)].body
    assert type(got[0]).FromString(body) == got[0]  # what the streams got is the one shared body
    for client, response in zip((first, second), got, strict=True):
        await client.ack(response)
    await first.nothing()
    assert {s["types"]["clusters"]["state"] for s in xds.ads.describe()} == {"SYNCED"}


async def test_a_stream_never_gets_the_same_nonce_twice(xds):
    """A stream that narrows its route names and widens them again on the same snapshot gets
    the whole set again, under a nonce of its own: the shared one was already used on it."""
    xds.set("ns1", world())
    client = xds.client()
    await client.send(node=node("ns1"), type_url=ROUTE, resource_names=["r1"])
    whole = await client.recv()
    await client.ack(whole, names=["r1"])
    await client.send(type_url=ROUTE, resource_names=["nope"], response_nonce=whole.nonce,
                      version_info=whole.version_info)
    narrowed = await client.recv()
    assert names(narrowed) == []
    await client.ack(narrowed, names=["nope"])
    await client.send(type_url=ROUTE, resource_names=["r1"], response_nonce=narrowed.nonce,
                      version_info=narrowed.version_info)
    again = await client.recv()
    assert names(again) == ["r1"] and again.version_info == whole.version_info
    assert len({whole.nonce, narrowed.nonce, again.nonce}) == 3
    await client.ack(again, names=["r1"])
    await client.nothing()
    assert xds.ads.describe()[0]["types"]["routes"]["state"] == "SYNCED"


async def test_close_ends_every_stream_with_status_ok_before_the_server_stops(xds):
    # serve's shutdown: ads.close(), then wait_closed() before gRPC's own shutdown starts,
    # so no stream is left for gRPC to cancel.
    xds.set("ns1", world())
    client, other = xds.client(), xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=CLUSTER)
    await client.ack(await client.recv())
    await other.send(node=node("ns1"), type_url=CLUSTER)
    await other.ack(await other.recv())
    assert len(xds.ads.describe()) == 2
    xds.ads.close()
    assert await xds.ads.wait_closed(3)
    for c in (client, other):
        await asyncio.wait_for(c.done.wait(), 3)
        assert c.error is None  # the stream ended with status OK, not CANCELLED
        assert await c.call.code() == grpc.StatusCode.OK
    assert xds.ads.describe() == []


async def test_wait_closed_gives_up_after_its_timeout(xds):
    # A stream that never sends its first request has no state to close: its handler waits.
    client = xds.client()
    await eventually_active(xds.ads)
    xds.ads.close()
    assert not await xds.ads.wait_closed(0.2)
    await client.close()
    assert await xds.ads.wait_closed(3)


async def eventually_active(ads, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not ads._active:
        assert asyncio.get_running_loop().time() < deadline, "the stream never reached the server"
        await asyncio.sleep(0.01)
