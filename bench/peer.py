"""Part 6, peer: the same listener set fetched from ``sovereign`` and from egress-xds.

sovereign (a Python Envoy control plane from the package index; REST/JSON, polled) is
installed by this part into its own venv, ``bench/.peer-venv`` (git-ignored), with
``python -m venv`` and ``pip install sovereign``; if that or its start fails, the part says why
and measures nothing. Its config (``templates``: a Python template, the fastest kind it has)
returns the listeners egress-xds computes for namespace ``ns-0000`` of the 10-namespace bench
world, as JSON, loaded once. egress-xds ``serve`` runs on that world.

Load: 2 worker processes x 8 concurrent loops, for the same duration against each server, one
after the other in the same run. sovereign: ``POST /v3/discovery:listeners`` on keep-alive
connections (a full fetch: ``version_info`` "0"). egress-xds: a SotW ADS stream per fetch on a
reused HTTP/2 connection: request listeners, read the response, close (what a connecting
Envoy does). Neither client decodes the body. Both servers run one process.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import world
from bench.common import BENCH_DIR, PartResult, ServeProcess, tree_cpu_seconds, write_world

PEER_VENV = BENCH_DIR / ".peer-venv"
NAMESPACE = "ns-0000"
LOOPS_PER_WORKER = 8

TEMPLATE = '''\
"""sovereign template (bench): the listener set egress-xds serves, loaded once."""
import json
import os

_RESOURCES = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "listeners.json")))


def call(*args, **kwargs):
    return _RESOURCES
'''


def ensure_peer() -> tuple[Path | None, str]:
    """(path of the sovereign executable, how it got there) or (None, why not)."""
    exe = PEER_VENV / "bin" / "sovereign"
    if exe.exists():
        return exe, "already installed in bench/.peer-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True,
                       capture_output=True, text=True, timeout=120)
        proc = subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "--quiet", "sovereign"],
                              capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"creating bench/.peer-venv failed: {err}"
    if proc.returncode != 0 or not exe.exists():
        return None, f"pip install sovereign failed: {proc.stderr.strip()[-400:]}"
    return exe, "installed into bench/.peer-venv"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listeners_json(manifests: Path) -> tuple[list[dict[str, Any]], int, int]:
    """The listeners of NAMESPACE as Envoy JSON, the resource count and serialized size."""
    from google.protobuf import json_format

    from egress_xds.model.load import load_paths
    from egress_xds.resources import LISTENER
    from egress_xds.translate import Translator

    tr = Translator()
    tr.load(load_paths([manifests]).objects)
    listeners = tr.resources(NAMESPACE)[LISTENER]
    out = []
    size = 0
    for _name, msg in sorted(listeners.items()):
        d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
        d["@type"] = LISTENER
        out.append(d)
        size += msg.ByteSize()
    return out, len(out), size


def discovery_body() -> bytes:
    return json.dumps({"node": {"id": "bench", "cluster": "bench", "metadata": {"namespace": NAMESPACE},
                                "build_version": "x/1.40.0/Clean/RELEASE"},
                       "version_info": "0", "resource_names": []}).encode()


async def _rest_loop(url: str, body: bytes, end: float, counts: list[int]) -> None:
    import aiohttp

    async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as session:
        while time.time() < end:
            async with session.post(url, data=body) as r:
                data = await r.read()
                if r.status == 200:
                    counts[0] += 1
                    counts[1] += len(data)
                else:
                    counts[2] += 1


async def _ads_loop(address: str, end: float, counts: list[int]) -> None:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import struct_pb2

    from bench.clients import LISTENER

    node = base_pb2.Node(id="bench", cluster="bench")
    node.metadata.fields["namespace"].CopyFrom(struct_pb2.Value(string_value=NAMESPACE))
    request = discovery_pb2.DiscoveryRequest(node=node, type_url=LISTENER).SerializeToString()
    async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        method = ch.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=None, response_deserializer=None)
        while time.time() < end:
            call = method()
            await call.write(request)
            data = await call.read()
            call.cancel()
            if isinstance(data, bytes) and data:
                counts[0] += 1
                counts[1] += len(data)
            else:
                counts[2] += 1


async def _load(kind: str, target: str, seconds: float) -> list[int]:
    counts = [0, 0, 0]  # ok, bytes, failed
    end = time.time() + seconds
    if kind == "rest":
        body = discovery_body()
        loops = [_rest_loop(target, body, end, counts) for _ in range(LOOPS_PER_WORKER)]
    else:
        loops = [_ads_loop(target, end, counts) for _ in range(LOOPS_PER_WORKER)]
    results = await asyncio.gather(*loops, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors and not counts[0]:
        raise RuntimeError(repr(errors[0]))
    return counts


def _load_main(conn: multiprocessing.connection.Connection, kind: str, target: str, seconds: float) -> None:
    try:
        conn.send(("ok", asyncio.run(_load(kind, target, seconds))))
    except Exception as err:
        conn.send(("error", repr(err)))


def load(kind: str, target: str, seconds: float, workers: int = 2) -> tuple[float, float, int]:
    """(responses per second, mean response bytes, failures) over ``workers`` processes."""
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for _ in range(workers):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_load_main, args=(child, kind, target, seconds), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    ok = size = failed = 0
    for parent in pipes:
        if not parent.poll(seconds + 60):
            raise TimeoutError(f"{kind} load worker did not finish")
        status, payload = parent.recv()
        if status != "ok":
            raise RuntimeError(f"{kind} load: {payload}")
        ok += payload[0]
        size += payload[1]
        failed += payload[2]
    for p in procs:
        p.join(5)
    return ok / seconds, (size / ok if ok else 0.0), failed


def start_sovereign(exe: Path, workdir: Path, listeners: list[dict[str, Any]]) -> tuple[subprocess.Popen[bytes], str]:
    (workdir / "listeners.json").write_text(json.dumps(listeners))
    (workdir / "listeners_template.py").write_text(TEMPLATE)
    (workdir / "sovereign.yaml").write_text(
        "templates:\n  default:\n    - type: listeners\n"
        f"      spec: {{protocol: python, serialization: raw, path: {workdir / 'listeners_template.py'}}}\n"
        "template_context:\n  refresh: false\n"
        "logging:\n  access_logs: {enabled: false}\n  application_logs: {enabled: false}\n")
    port = _free_port()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"SOVEREIGN_CONFIG": f"file://{workdir / 'sovereign.yaml'}", "SOVEREIGN_HOST": "127.0.0.1",
                "SOVEREIGN_PORT": str(port), "SOVEREIGN_WORKERS": "1"})
    log = open(workdir / "sovereign.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([str(exe)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/v3/discovery:listeners"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            req = urllib.request.Request(url, data=discovery_body(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200 and b"outbound" in r.read():
                    return proc, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("sovereign did not serve the listeners: "
                       + (workdir / "sovereign.log").read_text(errors="replace")[-600:])


def _fetch_once(address: str) -> bytes:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import struct_pb2

    from bench.clients import LISTENER

    node = base_pb2.Node(id="bench", cluster="bench")
    node.metadata.fields["namespace"].CopyFrom(struct_pb2.Value(string_value=NAMESPACE))
    with grpc.insecure_channel(address) as channel:
        method = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=None, response_deserializer=None)
        call = method(iter([discovery_pb2.DiscoveryRequest(node=node, type_url=LISTENER).SerializeToString()]),
                      timeout=10)
        body: bytes = next(call)
        call.cancel()
        return body


def _start_baseline(tmp: Path, body: bytes) -> tuple[subprocess.Popen[str], str]:
    import pickle

    from bench import baseline
    from bench.clients import LISTENER

    data = tmp / "baseline.pickle"
    data.write_bytes(pickle.dumps({"sotw": {NAMESPACE: {"initial": [(LISTENER, body)], "update": []}}}))
    return baseline.start(data)


def _measured(kind: str, target: str, pid: int, seconds: float) -> tuple[float, float, int, float]:
    """(responses/s, mean bytes, failures, server CPU seconds per response)."""
    cpu0 = tree_cpu_seconds(pid)
    rate, size, failed = load(kind, target, seconds)
    cpu = tree_cpu_seconds(pid) - cpu0
    return rate, size, failed, (cpu / (rate * seconds) if rate else 0.0)


def _push_rate(serve: ServeProcess, manifests: Path, streams: int, changes: int) -> tuple[float, int, float] | None:
    """Responses per second when each change of NAMESPACE's listener is pushed to ``streams``
    open SotW streams subscribed to listeners only: listener responses received / (sum over
    changes of file write -> last ACK)."""
    from bench.clients import LISTENER, ClientPool, specs
    from bench.common import atomic_write

    pool = ClientPool(serve.ads, specs([NAMESPACE], streams, False, "push", (LISTENER,)))
    total = 0
    window = 0.0
    try:
        ready, _errors, _ = pool.connect(timeout=90)
        if ready < streams:
            return None
        cpu0 = tree_cpu_seconds(serve.pid)
        for i in range(changes):
            time.sleep(0.3)
            pool.mark()
            text = world.namespace_file(0, sni_variant=i + 1)
            t_write = atomic_write(manifests / f"{NAMESPACE}.yaml", text)
            pool.wait_quiet(quiet=0.3, timeout=30)
            records = pool.collect()
            acks = [r[1] for _spec, recs, _ in records for r in recs if r[2] == LISTENER]
            if not acks:
                return None
            total += len(acks)
            window += max(acks) - t_write
        cpu = tree_cpu_seconds(serve.pid) - cpu0
    finally:
        pool.close()
    return total / window, streams, cpu / total


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def run(part: PartResult, quick: bool) -> None:
    seconds = 3.0 if quick else 8.0
    rounds = 1 if quick else 2
    exe, how = ensure_peer()
    if exe is None:
        part.skip("sovereign", how)
        return
    version = subprocess.run([str(PEER_VENV / "bin" / "pip"), "show", "sovereign"], capture_output=True,
                             text=True, timeout=60).stdout
    peer_version = next((line.split(":", 1)[1].strip() for line in version.splitlines()
                         if line.startswith("Version:")), "?")
    part.notes.append(f"sovereign {peer_version} ({how}), 1 gunicorn/uvicorn worker; egress-xds serve, "
                      f"1 process; load: 2 client processes x {LOOPS_PER_WORKER} concurrent loops, "
                      f"{seconds:.0f} s per run, {rounds} interleaved round(s) (sovereign, egress-xds, "
                      "raw baseline, egress-xds pushes), best run of each kept; all on the same 2 cores as the "
                      "clients.")
    results: dict[str, list[tuple[float, float, int, float]]] = {"peer": [], "ours": [], "base": []}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmpdir:
        tmp = Path(tmpdir)
        manifests = tmp / "manifests"
        write_world(manifests, world.files(10))
        listeners, count, size = _listeners_json(manifests)
        try:
            sov, url = start_sovereign(exe, tmp, listeners)
        except (RuntimeError, OSError) as err:
            part.skip("sovereign", f"did not start: {err}")
            return
        serve = base = None
        push_runs: list[tuple[float, int, float]] = []
        try:
            serve = ServeProcess(manifests, tmp / "serve.log")
            base, base_address = _start_baseline(tmp, _fetch_once(serve.ads))
            for _ in range(rounds):
                results["peer"].append(_measured("rest", url, sov.pid, seconds))
                results["ours"].append(_measured("ads", serve.ads, serve.pid, seconds))
                results["base"].append(_measured("ads", base_address, base.pid, seconds))
                measured = _push_rate(serve, manifests, streams=50 if quick else 200, changes=3 if quick else 10)
                if measured is not None:
                    push_runs.append(measured)
        finally:
            _stop(sov)
            if serve is not None:
                serve.stop()
            if base is not None:
                _stop(base)
    peer = max(results["peer"])
    ours = max(results["ours"])
    raw = max(results["base"])
    part.add(f"listener set fetched ({count} listener, {size / 1e3:.1f} kB protobuf)",
             f"JSON {peer[1] / 1e3:.1f} kB vs protobuf {ours[1] / 1e3:.1f} kB per response")
    part.add("sovereign: POST /v3/discovery:listeners per second", f"{peer[0]:.0f}/s",
             note=f"server CPU {peer[3] * 1e3:.2f} ms per response; all runs: "
                  + ", ".join(f"{r[0]:.0f}/s" for r in results["peer"])
                  + (f"; {peer[2]} failed" if peer[2] else ""))
    part.add("egress-xds: ADS SotW listener fetches per second", f"{ours[0]:.0f}/s",
             note=f"server CPU {ours[3] * 1e3:.2f} ms per response; all runs: "
                  + ", ".join(f"{r[0]:.0f}/s" for r in results["ours"])
                  + (f"; {ours[2]} failed" if ours[2] else ""))
    part.add("raw gRPC server (bench.baseline, same bytes, no xDS logic): fetches per second",
             f"{raw[0]:.0f}/s", note=f"server CPU {raw[3] * 1e3:.2f} ms per response: a grpc.aio server "
                                    "with no logic at all; on these shared cores the clients set the pace")
    if peer[3] and ours[3]:
        part.add("server CPU per response, sovereign / egress-xds", f"{peer[3] / ours[3]:.1f}x")
    if peer[0] > 0:
        ratio = ours[0] / peer[0]
        part.add("egress-xds / sovereign, full fetches per second", f"{ratio:.1f}x", ">= 10x", ratio >= 10,
                 note="a new ADS stream per fetch, as a REST poll is a new request")
    if push_runs and peer[0] > 0:
        rate, n, cpu_per = max(push_runs)
        part.add(f"egress-xds: listener set pushed over {n} open streams, responses per second",
                 f"{rate:.0f}/s", note=f"server CPU {cpu_per * 1e3:.2f} ms per response (incl. "
                 "translating each change); xDS's own way: the stream stays open, each change is pushed; "
                 "all runs: " + ", ".join(f"{r[0]:.0f}/s" for r in push_runs))
        part.add("egress-xds pushes / sovereign fetches, per second", f"{rate / peer[0]:.1f}x", ">= 10x",
                 rate / peer[0] >= 10)
