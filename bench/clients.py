"""Many ADS streams (SotW or delta) spread over worker processes, driven from the parent.

In: a server address (``host:port`` or ``unix:PATH``) and stream specs (namespace, delta);
commands from the parent over a pipe. Out: per stream, every response received after
``mark()``: (time received, time ACK written, type URL, version, size, raw bytes of the first
stream of each namespace when captured).

Each stream behaves like an Envoy: it subscribes to clusters, listeners and routes (wildcard)
on one HTTP/2 connection of its own, and ACKs every response as soon as it is read. Worker
processes are started with ``spawn`` (gRPC must not be forked) so the clients' CPU is not the
measuring process's; on a 2-core machine they still compete with the server for the cores.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import time
from dataclasses import dataclass, field
from typing import Any

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPES = (CLUSTER, LISTENER, ROUTE)
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]

# (t_recv, t_ack, type_url, version, size, raw-or-None)
Record = tuple[float, float, str, str, int, bytes | None]


@dataclass(frozen=True)
class Spec:
    namespace: str
    delta: bool
    node_id: str
    types: tuple[str, ...] = TYPES


def specs(namespaces: list[str], count: int, delta: bool, prefix: str = "bench",
          types: tuple[str, ...] = TYPES) -> list[Spec]:
    """``count`` streams spread round-robin over ``namespaces``, subscribed to ``types``."""
    return [Spec(namespaces[i % len(namespaces)], delta, f"{prefix}-{'d' if delta else 's'}-{i}", types)
            for i in range(count)]


# ---- worker side -------------------------------------------------------------------------


@dataclass
class _Stream:
    spec: Spec
    capture: bool
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[str] = field(default_factory=set)
    records: list[Record] = field(default_factory=list)
    initial: dict[str, bytes] = field(default_factory=dict)
    recording: bool = False
    error: str = ""
    last: float = 0.0


async def _run_stream(channel: Any, st: _Stream) -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
    from google.protobuf import struct_pb2

    node = base_pb2.Node(id=st.spec.node_id, cluster="bench")
    node.metadata.fields["namespace"].CopyFrom(struct_pb2.Value(string_value=st.spec.namespace))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    delta = st.spec.delta
    call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
    try:
        for i, type_url in enumerate(st.spec.types):
            if delta:
                await call.write(discovery_pb2.DeltaDiscoveryRequest(
                    node=node if i == 0 else None, type_url=type_url))
            else:
                await call.write(discovery_pb2.DiscoveryRequest(
                    node=node if i == 0 else None, type_url=type_url))
        while True:
            response = await call.read()
            if response is None or response is _EOF[0]:
                break
            t_recv = time.time()
            type_url = response.type_url
            version = response.system_version_info if delta else response.version_info
            if delta:
                await call.write(discovery_pb2.DeltaDiscoveryRequest(
                    type_url=type_url, response_nonce=response.nonce))
            else:
                await call.write(discovery_pb2.DiscoveryRequest(
                    type_url=type_url, version_info=version, response_nonce=response.nonce))
            t_ack = time.time()
            raw = response.SerializeToString() if st.capture else b""
            if st.recording:
                st.records.append((t_recv, t_ack, type_url, version, len(raw) or response.ByteSize(),
                                   raw if st.capture else None))
                st.last = t_ack
            else:
                if st.capture:
                    st.initial[type_url] = raw
                st.seen.add(type_url)
                if st.seen >= set(st.spec.types):
                    st.ready.set()
    except asyncio.CancelledError:
        call.cancel()
        raise
    except Exception as err:  # recorded, the parent reports it
        st.error = repr(err)[:300]
        st.ready.set()


_EOF: list[Any] = []


async def _worker(conn: multiprocessing.connection.Connection, address: str, todo: list[Spec],
                  capture_first: bool) -> None:
    import grpc

    _EOF.append(grpc.aio.EOF)
    loop = asyncio.get_running_loop()
    streams: list[_Stream] = []
    captured: set[str] = set()
    for spec in todo:
        cap = capture_first and spec.namespace not in captured
        captured.add(spec.namespace)
        streams.append(_Stream(spec, cap))
    channels: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        op = cmd[0]
        if op == "connect":
            timeout = cmd[1]
            started = time.monotonic()
            sem = asyncio.Semaphore(64)

            async def open_one(st: _Stream, sem: asyncio.Semaphore = sem,
                               timeout: float = timeout) -> None:
                async with sem:
                    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
                    channels.append(channel)
                    tasks.append(asyncio.create_task(_run_stream(channel, st)))
                    await asyncio.wait_for(st.ready.wait(), timeout)

            try:
                await asyncio.wait_for(asyncio.gather(*(open_one(s) for s in streams)), timeout)
            except TimeoutError:
                pass
            errors = [s.error for s in streams if s.error]
            ready = sum(1 for s in streams if s.ready.is_set() and not s.error)
            conn.send(("ready", ready, errors[:3], time.monotonic() - started))
        elif op == "mark":
            for st in streams:
                st.records = []
                st.recording = True
            conn.send(("ok",))
        elif op == "quiet":
            # Wait until every stream got something and nothing arrived for ``quiet`` s.
            quiet, timeout = cmd[1], cmd[2]
            deadline = time.time() + timeout
            while time.time() < deadline:
                now = time.time()
                if all(st.records for st in streams) and all(now - st.last > quiet for st in streams):
                    break
                await asyncio.sleep(0.02)
            conn.send(("ok",))
        elif op == "collect":
            conn.send(("records", [(st.spec, st.records, st.initial) for st in streams]))
        elif op == "stop":
            for task in tasks:
                task.cancel()
            for channel in channels:
                await channel.close(None)
            conn.send(("stopped",))
            return


def lower_priority(nice: int) -> None:
    """Make this process yield the CPU to the server and Envoy under test, for real.

    ``os.nice`` alone does not: with autogroup scheduling (Linux's default on desktops and
    on this machine, ``kernel.sched_autogroup_enabled = 1``) a nice value only ranks a
    process within its session's group, and groups share the cores equally. ``serve`` and
    Envoy each run in a session of their own, so workers niced in the benchmark's session
    still took half of a contended core from them. A session of its own whose group is
    niced (``/proc/self/autogroup``) makes the priority hold across groups; without
    autogroup the plain nice value already does."""
    os.nice(nice)
    try:
        os.setsid()
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass


def _worker_main(conn: multiprocessing.connection.Connection, address: str, todo: list[Spec],
                 capture_first: bool, nice: int = 0) -> None:
    if nice:
        lower_priority(nice)
    asyncio.run(_worker(conn, address, todo, capture_first))


# ---- parent side -------------------------------------------------------------------------


class ClientPool:
    """``specs`` streams over ``workers`` processes against ``address``. ``nice`` lowers the
    workers' CPU priority: where they stand in for sidecars on other nodes (part 3), they
    should not take the cores from the Envoy and the server being measured."""

    def __init__(self, address: str, all_specs: list[Spec], workers: int = 2,
                 capture_first: bool = False, nice: int = 0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        self.count = len(all_specs)
        for w in range(workers):
            todo = all_specs[w::workers]
            if not todo:
                continue
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, address, todo, capture_first, nice),
                               daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def _all(self, *cmd: Any, timeout: float = 120.0) -> list[Any]:
        for c in self.conns:
            c.send(cmd)
        out = []
        for c in self.conns:
            if not c.poll(timeout):
                raise TimeoutError(f"client worker did not answer {cmd[0]!r} in {timeout} s")
            out.append(c.recv())
        return out

    def connect(self, timeout: float = 60.0) -> tuple[int, list[str], float]:
        """Open every stream and wait for its first clusters/listeners/routes; returns
        (streams ready, first errors, seconds)."""
        answers = self._all("connect", timeout, timeout=timeout + 30)
        ready = sum(a[1] for a in answers)
        errors = [e for a in answers for e in a[2]]
        return ready, errors, max(a[3] for a in answers)

    def mark(self) -> None:
        self._all("mark")

    def wait_quiet(self, quiet: float = 0.4, timeout: float = 30.0) -> None:
        self._all("quiet", quiet, timeout, timeout=timeout + 30)

    def collect(self) -> list[tuple[Spec, list[Record], dict[str, bytes]]]:
        out = []
        for answer in self._all("collect"):
            out.extend(answer[1])
        return out

    def close(self) -> None:
        try:
            self._all("stop", timeout=30)
        except (TimeoutError, OSError, EOFError):
            pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def updated_times(records: list[tuple[Spec, list[Record], dict[str, bytes]]]) -> tuple[list[float], int]:
    """Per stream: time.time() at which it had ACKed the final version of every type that
    changed after the mark. Returns (times, streams without any update)."""
    times = []
    missing = 0
    for _spec, recs, _initial in records:
        if not recs:
            missing += 1
            continue
        final: dict[str, str] = {}
        for r in recs:
            final[r[2]] = r[3]
        done = 0.0
        for type_url, version in final.items():
            first = min(r[1] for r in recs if r[2] == type_url and r[3] == version)
            done = max(done, first)
        times.append(done)
    return times, missing


def captured_bytes(records: list[tuple[Spec, list[Record], dict[str, bytes]]]) -> dict[str, dict[str, list[tuple[str, bytes]]]]:
    """namespace -> {"initial": [(type, bytes)], "update": [(type, bytes)]} from captured streams
    (the update is the last response of each type, in arrival order)."""
    out: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    for spec, recs, initial in records:
        if not initial:
            continue
        last: dict[str, tuple[int, bytes]] = {}
        for i, r in enumerate(recs):
            if r[5] is not None:
                last[r[2]] = (i, r[5])
        update = [(t, b) for t, (_, b) in sorted(last.items(), key=lambda kv: kv[1][0])]
        out[spec.namespace] = {"initial": [(t, initial[t]) for t in TYPES if t in initial],
                               "update": update}
    return out
