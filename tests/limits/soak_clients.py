"""The client side of the soak test (tests/limits/test_soak.py), run in spawned processes.

In: commands over a ``multiprocessing`` pipe from the test. Out: one reply per command, a
plain dict of counts and timings. Each worker has its own asyncio loop and ``grpc.aio``
channels to a real ``egress-xds serve``, so nothing on the client side shares the server's
process. Per round it opens many SotW and delta ADS streams (clusters and listeners, both
wildcard) over fresh TCP connections, ACKs every response, waits for a snapshot change when
told to, then ends every stream in the way chosen for it when it was opened:

``cancel``   the client cancels the call (RST_STREAM);
``half``     the client half-closes, the server must end the stream with status OK;
``channel``  every stream of the round's first channel goes when that channel is closed;
``silent``   a call that never sends its first request (the server handler is still waiting
             for the node), then cancelled.
A worker that the test kills (SIGKILL) leaves its streams to the kernel closing the sockets.

Commands (tuple ``(name, args)``): ``open`` {round, streams, namespaces, channels, silent,
seed}, ``mark``, ``changed`` {namespace, timeout}, ``close``, ``exit``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from egress_xds.resources import CLUSTER, LISTENER

WANTED = frozenset({CLUSTER, LISTENER})
MODES = ("cancel", "half")


def _node(namespace: str, node_id: str) -> base_pb2.Node:
    node = base_pb2.Node(id=node_id, cluster="soak")
    node.metadata.fields["namespace"].CopyFrom(struct_pb2.Value(string_value=namespace))
    return node


class SoakStream:
    """One ADS stream that ACKs whatever it gets and remembers how it ended."""

    def __init__(self, channel: grpc.aio.Channel, *, delta: bool, namespace: str, mode: str) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call: Any = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.delta = delta
        self.namespace = namespace
        self.mode = mode
        self.types: set[str] = set()
        self.acked = 0
        self.mark = 0
        self.synced = asyncio.Event()
        self.done = asyncio.Event()
        self.outcome = ""
        self.closing = False
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    def _request(self, **fields: Any) -> Any:
        cls = discovery_pb2.DeltaDiscoveryRequest if self.delta else discovery_pb2.DiscoveryRequest
        return cls(**fields)

    async def start(self, node_id: str) -> None:
        async with self._lock:
            await self.call.write(self._request(node=_node(self.namespace, node_id), type_url=CLUSTER))
            await self.call.write(self._request(type_url=LISTENER))
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    self.outcome = "OK"
                    return
                self.types.add(response.type_url)
                await self._ack(response)
                if self.types >= WANTED:
                    self.synced.set()
        except grpc.aio.AioRpcError as err:
            self.outcome = err.code().name
        except asyncio.CancelledError:  # read() on a call this client cancelled
            self.outcome = "CANCELLED"
        except Exception as err:  # reported to the test, which fails on it
            self.outcome = f"error: {err!r}"
        finally:
            self.done.set()

    async def _ack(self, response: Any) -> None:
        if self.delta:
            ack = self._request(type_url=response.type_url, response_nonce=response.nonce)
        else:
            ack = self._request(type_url=response.type_url, version_info=response.version_info,
                                response_nonce=response.nonce)
        async with self._lock:
            if self.closing:
                return
            try:
                await self.call.write(ack)
            except Exception:
                if self.closing or self.call.done():
                    return  # the stream is going away
                raise
        self.acked += 1

    async def half_close(self) -> None:
        async with self._lock:
            self.closing = True
            await self.call.done_writing()

    def cancel(self) -> None:
        self.closing = True
        self.call.cancel()


class Worker:
    def __init__(self, target: str, name: str) -> None:
        self.target = target
        self.name = name
        self.channels: list[grpc.aio.Channel] = []
        self.streams: list[SoakStream] = []
        self.silent: list[Any] = []

    async def open(self, round_: int, streams: int, namespaces: list[str], channels: int,
                   silent: int, seed: int) -> dict[str, Any]:
        started = time.monotonic()
        rng = random.Random(seed)
        # A local subchannel pool per channel: each channel is its own TCP connection.
        self.channels = [grpc.aio.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(channels)]
        for i in range(streams):
            channel = i % channels
            mode = "channel" if channel == 0 else rng.choice(MODES)
            self.streams.append(SoakStream(self.channels[channel], delta=rng.random() < 0.5,
                                           namespace=rng.choice(namespaces), mode=mode))
        await asyncio.gather(*(s.start(f"soak-{self.name}-{round_}-{i}") for i, s in enumerate(self.streams)))
        for i in range(silent):
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channels[1 + i % (channels - 1)])
            self.silent.append(stub.StreamAggregatedResources())
        deadline = time.monotonic() + 60
        while not all(s.synced.is_set() or s.done.is_set() for s in self.streams):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return {"streams": len(self.streams), "synced": sum(s.synced.is_set() for s in self.streams),
                "delta": sum(s.delta for s in self.streams), "silent": len(self.silent),
                "failed": sorted({s.outcome for s in self.streams if s.done.is_set()}),
                "by_namespace": dict(Counter(s.namespace for s in self.streams)),
                "seconds": time.monotonic() - started}

    def mark(self) -> dict[str, Any]:
        for s in self.streams:
            s.mark = s.acked
        return {}

    async def changed(self, namespace: str, timeout: float) -> dict[str, Any]:
        """Wait until every stream of ``namespace`` got (and ACKed) a response since ``mark``."""
        started = time.monotonic()
        mine = [s for s in self.streams if s.namespace == namespace]
        while time.monotonic() - started < timeout:
            if all(s.acked > s.mark for s in mine):
                break
            await asyncio.sleep(0.02)
        others = [s for s in self.streams if s.namespace != namespace]
        return {"streams": len(mine), "got": sum(s.acked > s.mark for s in mine),
                "others_pushed": sum(s.acked > s.mark for s in others),
                "seconds": time.monotonic() - started}

    async def close(self) -> dict[str, Any]:
        started = time.monotonic()
        for s in self.streams:
            if s.mode == "cancel":
                s.cancel()
        await asyncio.gather(*(s.half_close() for s in self.streams if s.mode == "half"))
        for s in self.streams:
            if s.mode == "channel":
                s.closing = True
        await self.channels[0].close()
        for call in self.silent:
            call.cancel()
        deadline = time.monotonic() + 30
        while not all(s.done.is_set() for s in self.streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        outcomes = Counter(f"{s.mode}:{s.outcome or 'still open'}" for s in self.streams)
        for channel in self.channels:
            await channel.close()
        self.streams, self.silent, self.channels = [], [], []
        return {"outcomes": dict(outcomes), "seconds": time.monotonic() - started}

    async def shutdown(self) -> None:
        for s in self.streams:
            s.cancel()
        for channel in self.channels:
            await channel.close()


async def _serve(conn: Connection, target: str, name: str) -> None:
    worker = Worker(target, name)
    try:
        while True:
            command, args = await asyncio.to_thread(conn.recv)
            if command == "exit":
                conn.send({})
                return
            if command == "open":
                reply = await worker.open(**args)
            elif command == "mark":
                reply = worker.mark()
            elif command == "changed":
                reply = await worker.changed(**args)
            elif command == "close":
                reply = await worker.close()
            else:
                raise ValueError(f"unknown command {command!r}")
            conn.send(reply)
    finally:
        await worker.shutdown()


def main(conn: Connection, target: str, name: str) -> None:
    """Process entry point (``multiprocessing`` spawn)."""
    asyncio.run(_serve(conn, target, name))
