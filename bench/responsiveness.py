"""Part 5, responsiveness: does translating the big world freeze unrelated ADS streams?

``serve`` runs on the 1,000-namespace world (100 with ``--quick``). A probe stream in the
unrelated namespace ``probe`` plays ping-pong with it: each request ACKs the last response and
toggles its RDS subscription (``[route]`` / ``[]``), which the server must answer, so every
round trip is one request processed and one response pushed. Then every manifest file is
rewritten (every namespace changes: a full parse + rebuild + re-encode of the world) and the
longest round trip while that reload runs is the stall. The probe runs in its own process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import statistics
import time
from typing import Any

from bench import world
from bench.bigworld import big_world
from bench.common import PartResult, event_time, ms, percentile, serve_supports

PROBE_ROUTE = "egress|probe/deny|80"


async def _probe(address: str, seconds: float, stop: Any) -> list[tuple[float, float]]:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
    from google.protobuf import struct_pb2

    from bench.clients import ROUTE

    node = base_pb2.Node(id="probe", cluster="bench")
    node.metadata.fields["namespace"].CopyFrom(struct_pb2.Value(string_value="probe"))
    out: list[tuple[float, float]] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=ROUTE,
                                                        resource_names=[PROBE_ROUTE]))
        response = await asyncio.wait_for(call.read(), 30)
        names: list[str] = [PROBE_ROUTE]
        end = time.time() + seconds
        while time.time() < end and not stop.is_set():
            names = [] if names else [PROBE_ROUTE]
            sent = time.time()
            await call.write(discovery_pb2.DiscoveryRequest(
                type_url=ROUTE, version_info=response.version_info,
                response_nonce=response.nonce, resource_names=names))
            response = await asyncio.wait_for(call.read(), 30)
            out.append((sent, time.time() - sent))
        call.cancel()
    return out


def _probe_main(conn: multiprocessing.connection.Connection, address: str, seconds: float,
                stop: Any) -> None:
    try:
        conn.send(("ok", asyncio.run(_probe(address, seconds, stop))))
    except Exception as err:
        conn.send(("error", repr(err)))


def _phase(at: float, reloads: list[dict[str, Any]]) -> str:
    """Which reload, and which phase of it (``serve``'s log fields), time ``at`` falls in."""
    for index, event in enumerate(reloads, 1):
        end = event_time(event)
        start = end - float(event.get("seconds", 0))
        if not start <= at <= end:
            continue
        edge = start
        for phase in ("load", "plan", "build", "status"):
            edge += float(event.get(f"{phase}_seconds", 0))
            if at <= edge:
                return f"reload {index}, {phase}"
        return f"reload {index}"
    return "between reloads"


def run(part: PartResult, quick: bool) -> None:
    n = 100 if quick else 1000
    bw = big_world(n)
    if serve_supports("--max-requests-per-second"):
        part.notes.append("serve runs with --max-requests-per-second 0: the probe's ping-pong "
                          "(thousands of requests/s) exceeds the default per-stream guard")
    serve = bw.serve
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    budget = 60.0 if not quick else 20.0
    stop = ctx.Event()
    proc = ctx.Process(target=_probe_main, args=(child, serve.ads, budget, stop), daemon=True)
    proc.start()
    time.sleep(3.0)  # the probe's idle round trips
    offset = serve.log_offset()
    t_write = time.time()
    variant = 1000 + int(time.time()) % 1000
    t_last = t_write
    for i in range(n):  # every namespace changes: a full rebuild
        name, text = world.namespace_edit(i, variant)
        tmp = bw.manifests / ("." + name + ".tmp")
        tmp.write_text(text)
        t_last = time.time()
        os.replace(tmp, bw.manifests / name)
    t_written = time.time()
    # The watcher may split the writes over several reloads, and a reload's scan reads
    # files still being written. The rebuild is over when the last reload ended after the
    # last file was replaced, no scan found changes since (it would log "manifest file
    # loaded" before its own "config reloaded") and a second went by.
    reloads: list[dict[str, Any]] = []
    deadline = time.time() + budget - 6
    while time.time() < deadline:
        events = serve.events(offset)
        last = max((i for i, e in enumerate(events) if e.get("event") == "config reloaded"), default=-1)
        reloads = [e for e in events if e.get("event") == "config reloaded"]
        if last >= 0 and event_time(events[last]) >= t_last and time.time() - event_time(events[last]) > 1.0 \
                and not any(e.get("event") == "manifest file loaded" for e in events[last + 1:]):
            break
        time.sleep(0.2)
    t_done = time.time()
    stop.set()
    if not parent.poll(budget + 30):
        part.skip("probe", "the probe never answered")
        return
    status, payload = parent.recv()
    proc.join(5)
    if status != "ok":
        part.skip("probe", payload)
        return
    if not reloads:
        part.skip("stall during a full rebuild", "serve did not finish reloading in time")
        return
    rtts: list[tuple[float, float]] = payload
    idle = [r for s, r in rtts if s < t_write]
    during = [r for s, r in rtts if t_write <= s <= t_done]
    reload_s = sum(float(e.get("seconds", 0)) for e in reloads)
    part.add(f"full rebuild of the {n}-namespace world by serve (every file rewritten)",
             f"{reload_s:.2f} s", note=f"{len(reloads)} reload(s); writing the files took {t_written - t_write:.2f} s")
    part.add("probe round trip (request processed + response) idle p50 / max",
             f"{ms(statistics.median(idle))} / {ms(max(idle))}" if idle else "no sample")
    if during:
        stall = max(during)
        part.add(f"probe round trips during the rebuild: {len(during)}, p50 / p99",
                 f"{ms(percentile(during, 50))} / {ms(percentile(during, 99))}")
        part.add("max stall of an unrelated stream during the full rebuild", ms(stall),
                 "< 100 ms", stall < 0.100)
        worst = sorted(((r, s) for s, r in rtts if t_write <= s <= t_done), reverse=True)[:3]
        part.add("the longest stalls: when they began, and what serve was doing then",
                 "; ".join(f"{ms(r)} at +{s - t_write:.2f} s ({_phase(s, reloads)})" for r, s in worst),
                 note=f"+ seconds from the first file write; the writes ended at +{t_written - t_write:.2f} s; "
                      "phases from serve's 'config reloaded' log lines")
        pauses = serve.gc_pauses(t_write, t_done)
        if pauses:
            longest = max(pauses, key=lambda p: p[2])
            part.add("serve's garbage collector during the rebuild: passes > 5 ms, longest",
                     f"{len(pauses)}, {ms(longest[2])} (generation {longest[1]})",
                     note="a GC pass holds the GIL: every stream waits (recorded by bench/gctrace)")
    else:
        part.skip("max stall during the full rebuild", "no probe round trip completed in the window "
                  "(the stream was frozen for the whole rebuild)")
