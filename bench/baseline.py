"""The fan-out baseline: a gRPC server with no xDS logic that streams pre-serialized bytes.

Run as ``python -m bench.baseline --data FILE``: it binds 127.0.0.1 on a free port and prints
the port on stdout. ``FILE`` is a pickle of {"sotw"|"delta": {namespace: {"initial": [(type,
bytes)], "update": [(type, bytes)]}}}: the exact responses egress-xds sent in the same run.
It serves the same ADS method names (identity serializer, like egress-xds): each first request
of a type is answered with the captured initial bytes, ACKs are read and ignored. A unary
``/bench.Baseline/Push`` records time.time(), wakes every stream (each writes the captured
update bytes from its own task) and returns that time as text.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def start(data: Path) -> tuple[subprocess.Popen[str], str]:
    """Start the baseline on the pickle ``data``; returns (process, "127.0.0.1:PORT").

    It runs in a session of its own, as ``serve`` does (``bench.common.ServeProcess``): with
    autogroup scheduling each session is a group that gets an equal share of a contended
    core, so a baseline left in the benchmark's session would share one share with the
    client workers while ``serve`` had one to itself."""
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline", "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=repo,
                            start_new_session=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().strip())
    return proc, f"127.0.0.1:{port}"


def _identity(data: bytes) -> bytes:
    return data


class Baseline:
    def __init__(self, data: dict[str, dict[str, dict[str, list[tuple[str, bytes]]]]]) -> None:
        self.data = data
        self.wakes: set[asyncio.Event] = set()

    async def stream(self, requests: AsyncIterator[Any], context: Any, mode: str) -> None:
        first = await anext(aiter(requests))
        namespace = first.node.metadata.fields["namespace"].string_value
        data = self.data[mode][namespace]
        initial = dict(data["initial"])
        answered: set[str] = set()
        wake = asyncio.Event()
        self.wakes.add(wake)

        async def answer(req: Any) -> None:
            if req.type_url not in answered and req.type_url in initial:
                answered.add(req.type_url)
                await context.write(initial[req.type_url])

        async def read() -> None:
            async for req in requests:
                await answer(req)

        await answer(first)
        reader = asyncio.create_task(read())
        try:
            while not reader.done():
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not wake.is_set():
                    waiter.cancel()
                    break
                wake.clear()
                for _type_url, body in data["update"]:
                    await context.write(body)
        finally:
            self.wakes.discard(wake)
            reader.cancel()

    async def sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self.stream(requests, context, "sotw")

    async def delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self.stream(requests, context, "delta")

    async def push(self, _request: bytes, _context: Any) -> bytes:
        started = time.time()
        for wake in list(self.wakes):
            wake.set()
        return repr(started).encode()


async def main_async(data_path: str) -> None:
    import grpc
    from envoy.service.discovery.v3 import discovery_pb2

    with open(data_path, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - written by the bench itself
    baseline = Baseline(data)
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                baseline.sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_identity),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                baseline.delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_identity),
        }),
        grpc.method_handlers_generic_handler("bench.Baseline", {
            "Push": grpc.unary_unary_rpc_method_handler(
                baseline.push, request_deserializer=_identity, response_serializer=_identity),
        }),
    ])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args.data))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
