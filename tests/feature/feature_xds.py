"""Helpers for the ADS feature tests: hand-built Envoy resources and an in-process client.

In: nothing but xds-protos. Out: ``resources(...)`` snapshots Envoy accepts, and ``AdsClient``,
a gRPC ADS client (SotW or delta) that queues every response for assertions. Used by
tests/feature and tests/server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message

from egress_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def cluster(name: str, eds: bool = False, port: int = 9) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.FromMilliseconds(250)
    if eds:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.ads.SetInParent()
        c.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    else:
        c.type = cluster_pb2.Cluster.STATIC
        c.load_assignment.CopyFrom(endpoints(name, port))
    return c


def endpoints(name: str, port: int = 9) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                address=_addr("127.0.0.1", port)))])])


def route_config(name: str, clusters: list[str], header: str = "") -> route_pb2.RouteConfiguration:
    routes = []
    for i, c in enumerate(clusters):
        r = route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=f"/{c}" if i else "/"),
            route=route_components_pb2.RouteAction(cluster=c))
        routes.append(r)
    routes.reverse()  # the "/" catch-all last
    vh = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=routes)
    rc = route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])
    if header:
        rc.response_headers_to_add.add().header.CopyFrom(base_pb2.HeaderValue(key="x-test", value=header))
    return rc


def http_listener(name: str, port: int, route: str, stat_prefix: str = "egress.test.net.80") -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix)
    hcm.rds.route_config_name = route
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router()))
    chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))])
    return listener_pb2.Listener(name=name, address=_addr("127.0.0.1", port), filter_chains=[chain])


def tcp_listener(name: str, port: int, cluster_name: str, stat_prefix: str = "egress.test.net.5432.default-allow") -> listener_pb2.Listener:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster_name)
    chain = listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
        name="envoy.filters.network.tcp_proxy", typed_config=_any(proxy))])
    return listener_pb2.Listener(name=name, address=_addr("127.0.0.1", port), filter_chains=[chain])


def world(port: int = 10080, clusters: tuple[str, ...] = ("c1",), header: str = "v1",
          eds: bool = False, tcp_port: int | None = None) -> dict[str, dict[str, Message]]:
    """A complete, consistent namespace config: clusters, one HTTP listener -> route -> clusters,
    optionally a tcp_proxy listener to the first cluster."""
    out: dict[str, dict[str, Message]] = {
        CLUSTER: {c: cluster(c, eds=eds) for c in clusters},
        LISTENER: {"http": http_listener("http", port, "r1")},
        ROUTE: {"r1": route_config("r1", list(clusters), header)},
    }
    if eds:
        out[ENDPOINT] = {c: endpoints(c) for c in clusters}
    if tcp_port is not None:
        out[LISTENER]["tcp"] = tcp_listener("tcp", tcp_port, clusters[0])
    return out


def node(namespace: str | None, node_id: str = "sidecar~test") -> base_pb2.Node:
    n = base_pb2.Node(id=node_id, cluster="test")
    if namespace is not None:
        n.metadata.fields["namespace"].CopyFrom(struct_pb2.Value(string_value=namespace))
    return n


class AdsClient:
    """One ADS stream; every response lands in a queue (no read is ever cancelled)."""

    def __init__(self, channel: grpc.aio.Channel, delta: bool = False) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.delta = delta
        self.call: Any = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.error: grpc.aio.AioRpcError | None = None
        self.done = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    break
                await self.responses.put(response)
        except grpc.aio.AioRpcError as err:
            self.error = err
        finally:
            self.done.set()

    async def send(self, **fields: Any) -> None:
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        await self.call.write(cls(**fields))

    async def recv(self, timeout: float = 3.0) -> Any:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def nothing(self, wait: float = 0.3) -> None:
        """Assert that no response arrives within ``wait`` seconds."""
        try:
            response = await asyncio.wait_for(self.responses.get(), wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {response.type_url} nonce {response.nonce}")

    async def ack(self, response: Any, names: list[str] | None = None, **extra: Any) -> None:
        if self.delta:
            await self.send(type_url=response.type_url, response_nonce=response.nonce, **extra)
        else:
            await self.send(type_url=response.type_url, version_info=response.version_info,
                            response_nonce=response.nonce, resource_names=names or [], **extra)

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


def names(response: Any) -> list[str]:
    """Resource names in a SotW or delta response."""
    out = []
    for item in response.resources:
        if isinstance(item, discovery_pb2.Resource):
            out.append(item.name)
        else:
            msg = _TYPES[item.type_url]()
            item.Unpack(msg)
            out.append(msg.cluster_name if isinstance(msg, endpoint_pb2.ClusterLoadAssignment) else msg.name)
    return sorted(out)


def unpack(item: Any) -> Message:
    packed = item.resource if isinstance(item, discovery_pb2.Resource) else item
    msg = _TYPES[packed.type_url]()
    packed.Unpack(msg)
    return msg


_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster, LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}


@asynccontextmanager
async def ads_on_loopback(ads: Any, options: Sequence[tuple[str, Any]] = ()
                          ) -> AsyncIterator[tuple[str, grpc.aio.Channel]]:
    """Serve ``ads`` (an ``AdsServer``) on a random loopback port; yield its target and a
    channel to it. On exit: the channel, the ADS server and the gRPC server are closed."""
    server = grpc.aio.server(options=list(options))
    server.add_generic_rpc_handlers([ads.handler()])
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    channel = grpc.aio.insecure_channel(target)
    try:
        yield target, channel
    finally:
        await channel.close()
        ads.close()
        await server.stop(0.5)
