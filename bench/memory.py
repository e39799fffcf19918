"""Part 4, memory: resident size (VmRSS) of ``serve`` idle, with 1,000 streams, per stream.

World: the fan-out world (``bench.fanout``: 21 namespaces, ~40 kB per snapshot); 1,000 SotW
streams (200 with ``--quick``) spread over its consumer namespaces, then one change pushed to all of
them. When the big world's ``serve`` of parts 1/5 is running, its idle size is reported too.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import baseline, world
from bench.bigworld import _current as big_worlds
from bench.clients import ClientPool, captured_bytes, specs
from bench.common import PartResult, ServeProcess, atomic_write, mb, rss_bytes
from bench.fanout import GLOBAL_NETWORKS, GLOBAL_ROUTES, fanout_world


def run(part: PartResult, quick: bool, workers: int = 2) -> None:
    count = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmpdir:
        tmp = Path(tmpdir)
        manifests = tmp / "manifests"
        namespaces = fanout_world(manifests)
        serve = ServeProcess(manifests, tmp / "serve.log")
        try:
            time.sleep(1.0)
            idle = serve.rss()
            part.add("serve idle (21 namespaces, ~40 kB snapshots)", mb(idle))
            pool = ClientPool(serve.ads, specs(namespaces, count, False), workers=workers,
                              capture_first=True)
            try:
                ready, errors, _ = pool.connect(timeout=120)
                if ready < count:
                    part.skip(f"with {count} streams", f"only {ready}/{count} ready: {errors[:2]}")
                    return
                time.sleep(1.0)
                connected = serve.rss()
                pool.mark()
                name, text = world.global_edit(1, GLOBAL_NETWORKS, GLOBAL_ROUTES)
                atomic_write(manifests / name, text)
                pool.wait_quiet(quiet=0.5, timeout=30)
                time.sleep(0.5)
                pushed = serve.rss()
                capture = captured_bytes(pool.collect())
            finally:
                pool.close()
            peak = max(connected, pushed)
            part.add(f"serve with {count} streams connected / after one push to all",
                     f"{mb(connected)} / {mb(pushed)}", "< 150 MB" if count == 1000 else "",
                     peak < 150e6 if count == 1000 else None)
            part.add("per stream", f"{(peak - idle) / count / 1e3:.1f} kB")
        finally:
            serve.stop()
        raw = _baseline_rss(tmp, capture, namespaces, count, workers)
        if raw is not None:
            base_idle, base_connected = raw
            part.add(f"raw gRPC server (bench.baseline) idle / with {count} streams, per stream",
                     f"{mb(base_idle)} / {mb(base_connected)}, "
                     f"{(base_connected - base_idle) / count / 1e3:.1f} kB",
                     note="what grpc.aio itself costs per stream, same clients")
    for bw in big_worlds:
        part.add(f"serve idle on the {bw.namespaces}-namespace world of parts 1/5 "
                 f"({bw.namespaces + bw.consumers + 2} snapshots)", mb(bw.serve.rss()),
                 note="snapshots hold messages plus SotW and delta encodings of every resource")


def _baseline_rss(tmp: Path, capture: dict[str, Any], namespaces: list[str], count: int,
                  workers: int) -> tuple[int, int] | None:
    if not capture:
        return None
    data = tmp / "baseline.pickle"
    data.write_bytes(pickle.dumps({"sotw": capture}))
    proc, address = baseline.start(data)
    try:
        time.sleep(1.0)
        idle = rss_bytes(proc.pid)
        pool = ClientPool(address, specs(namespaces, count, False), workers=workers)
        try:
            ready, _errors, _ = pool.connect(timeout=120)
            if ready < count:
                return None
            time.sleep(1.0)
            return idle, rss_bytes(proc.pid)
        finally:
            pool.close()
    finally:
        proc.terminate()
        proc.wait(10)
