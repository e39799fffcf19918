"""Delta ADS (DeltaAggregatedResources) driven by an in-process gRPC client."""

from __future__ import annotations

import asyncio

import grpc

from egress_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.feature.feature_xds import node, unpack, world


def resource_names(response):
    return sorted(r.name for r in response.resources)


async def test_node_without_namespace_is_refused(xds):
    client = xds.client(delta=True)
    await client.send(node=node(None), type_url=CLUSTER)
    await asyncio.wait_for(client.done.wait(), 3)
    assert client.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.metadata.namespace" in client.error.details()


async def test_wildcard_changes_and_removals(xds):
    xds.set("ns1", world(clusters=("c1", "c2")))
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=CLUSTER)
    first = await client.recv()
    assert resource_names(first) == ["c1", "c2"] and not first.removed_resources
    assert all(r.version for r in first.resources)
    await client.ack(first)
    # Change only the route: clusters are not resent.
    xds.set("ns1", world(clusters=("c1", "c2"), header="v2"))
    await client.nothing()
    xds.set("ns1", world(clusters=("c1",)))
    second = await client.recv()
    assert second.type_url == CLUSTER
    assert not second.resources and list(second.removed_resources) == ["c2"]
    await client.ack(second)
    await client.nothing()
    assert xds.ads.describe()[0]["types"]["clusters"]["state"] == "SYNCED"
    assert xds.ads.describe()[0]["mode"] == "delta"


async def test_reconnect_with_known_versions_sends_only_differences(xds):
    xds.set("ns1", world(clusters=("c1", "c2")))
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=CLUSTER)
    first = await client.recv()
    versions = {r.name: r.version for r in first.resources}
    await client.close()
    xds.set("ns1", world(clusters=("c1", "c3")))
    again = xds.client(delta=True)
    await again.send(node=node("ns1"), type_url=CLUSTER,
                     initial_resource_versions={**versions, "ghost": "never-issued"})
    response = await again.recv()
    assert resource_names(response) == ["c3"]
    assert sorted(response.removed_resources) == ["c2", "ghost"]


async def test_first_request_answered_even_when_up_to_date(xds):
    xds.set("ns1", world())
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=CLUSTER)
    first = await client.recv()
    again = xds.client(delta=True)
    await again.send(node=node("ns1"), type_url=CLUSTER,
                     initial_resource_versions={r.name: r.version for r in first.resources})
    response = await again.recv()
    assert not response.resources and not response.removed_resources
    assert response.system_version_info == first.system_version_info


async def test_named_subscriptions_unknown_then_appearing(xds):
    xds.set("ns1", world(eds=True, clusters=("c1",)))
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=ENDPOINT, resource_names_subscribe=["c1", "c2"])
    first = await client.recv()
    assert resource_names(first) == ["c1"]
    assert list(first.removed_resources) == ["c2"]  # told it does not exist (yet)
    await client.ack(first)
    xds.set("ns1", world(eds=True, clusters=("c1", "c2")))
    second = await client.recv()
    assert resource_names(second) == ["c2"]
    await client.ack(second)
    # Unsubscribe, then subscribe again: sent again.
    await client.send(type_url=ENDPOINT, resource_names_unsubscribe=["c2"])
    await client.nothing()
    await client.send(type_url=ENDPOINT, resource_names_subscribe=["c2"])
    third = await client.recv()
    assert resource_names(third) == ["c2"]


async def test_nack_kept_last_good_not_resent(xds):
    xds.set("ns1", world(header="v1"))
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=ROUTE, resource_names_subscribe=["r1"])
    good = await client.recv()
    await client.ack(good)
    xds.set("ns1", world(header="v2"))
    bad = await client.recv()
    await client.send(type_url=ROUTE, response_nonce=bad.nonce,
                      error_detail={"code": 3, "message": "bad route"})
    await client.nothing()
    routes = xds.ads.describe()[0]["types"]["routes"]
    assert routes["state"] == "NACKED" and routes["last_nack"]["message"] == "bad route"
    # An unrelated push (listeners) does not bring the rejected route back.
    await client.send(type_url=LISTENER)
    assert (await client.recv()).type_url == LISTENER
    await client.nothing()
    xds.set("ns1", world(header="v3"))
    fixed = await client.recv()
    assert unpack(fixed.resources[0]).response_headers_to_add[0].header.value == "v3"


async def test_stale_nonce_ack_is_ignored_but_one_unacked_holds(xds):
    xds.set("ns1", world(port=1))
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=LISTENER)
    first = await client.recv()
    xds.set("ns1", world(port=2))
    await client.send(type_url=LISTENER, response_nonce="not-a-nonce-we-sent")
    await client.nothing()  # still waiting for an ACK of `first`
    await client.ack(first)
    second = await client.recv()
    assert unpack(second.resources[0]).address.socket_address.port_value == 2


async def test_cluster_removed_only_after_listener_replaced(xds):
    xds.set("ns1", world(clusters=("old",), tcp_port=10090))
    client = xds.client(delta=True)
    await client.send(node=node("ns1"), type_url=CLUSTER)
    await client.ack(await client.recv())
    await client.send(type_url=LISTENER)
    await client.ack(await client.recv())
    xds.set("ns1", world(clusters=("new",), tcp_port=10090))
    clusters = await client.recv()
    assert clusters.type_url == CLUSTER
    assert resource_names(clusters) == ["new"] and not clusters.removed_resources
    listeners = await client.recv()
    assert listeners.type_url == LISTENER
    await client.ack(clusters)
    await client.nothing()
    await client.ack(listeners)
    final = await client.recv()
    assert final.type_url == CLUSTER and list(final.removed_resources) == ["old"] and not final.resources
    await client.ack(final)
    await client.nothing()


async def test_streams_in_the_same_state_get_the_same_changes_and_a_nack_is_kept_apart(xds):
    """A change reaching many wildcard streams that hold the same set is planned once per
    snapshot (``ads._delta_plan``); a stream that NACKed a resource is planned on its own
    (the rejected version is not resent)."""
    xds.set("ns1", world(clusters=("c1", "c2")))
    clients = [xds.client(delta=True) for _ in range(3)]
    for client in clients:
        await client.send(node=node("ns1"), type_url=CLUSTER)
        await client.ack(await client.recv())
    xds.set("ns1", world(clusters=("c1", "c3")))
    updates = [await c.recv() for c in clients]
    for update in updates:
        assert resource_names(update) == ["c3"] and list(update.removed_resources) == ["c2"]
    # ... and sent as one shared response (rule 11): the same message, nonce included
    assert updates[0] == updates[1] == updates[2] and not updates[0].nonce.isdigit()
    await clients[0].ack(updates[0])
    await clients[1].ack(updates[1])
    await clients[2].send(type_url=CLUSTER, response_nonce=updates[2].nonce,
                          error_detail={"code": 3, "message": "c3 rejected"})
    xds.set("ns1", world(clusters=("c1", "c3", "c4")))
    again = [await c.recv() for c in clients]
    assert [resource_names(a) for a in again] == [["c4"], ["c4"], ["c4"]]  # the rejected c3 is not resent
    # the NACKing proxy still holds c2 (its last good set): it is removed now
    assert [list(a.removed_resources) for a in again] == [[], [], ["c2"]]
    assert again[0] == again[1] and again[2].nonce.isdigit()  # the NACKing one: its own response
