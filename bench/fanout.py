"""Part 2, fan-out: N concurrent ADS streams, one change, time until every stream ACKed it;
side by side with a raw-bytes gRPC baseline fed the very bytes egress-xds sent.

World: 10 namespaces of the bench world plus 10 consumer namespaces that use the global
view (2 global EgressNetworks, 10 global routes, so a snapshot is ~40 kB like a namespace's
own). Streams are spread over the consumer namespaces; the change flips the global
EgressNetwork ``global-00`` (Deny <-> Allow), which changes every consumer namespace's
listener and routes. Times: from the file write (end to end: watcher, parse, translate,
encode, push) and from the first ``snapshot set`` logged by serve (push only; this is what
the baseline's push is compared with).
"""

from __future__ import annotations

import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import baseline, world
from bench.clients import ClientPool, captured_bytes, specs, updated_times
from bench.common import (
    PartResult,
    ServeProcess,
    atomic_write,
    event_time,
    ms,
    percentile,
    wait_events,
    write_world,
)

CONSUMERS = 10
GLOBAL_NETWORKS, GLOBAL_ROUTES = 2, 10


def fanout_world(directory: Path) -> list[str]:
    write_world(directory, world.files(10, CONSUMERS, GLOBAL_NETWORKS, GLOBAL_ROUTES))
    return [f"consumer-{j:04d}" for j in range(CONSUMERS)]


class Variant:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def measure_ours(serve: ServeProcess, manifests: Path, namespaces: list[str], count: int,
                 delta: bool, variant: Variant, workers: int, reps: int) -> dict[str, Any]:
    """``reps`` changes pushed to the same ``count`` streams; per change, every stream's
    delay from the first snapshot set (push) and from the file write (e2e)."""
    pool = ClientPool(serve.ads, specs(namespaces, count, delta), workers=workers, capture_first=True)
    runs: list[dict[str, Any]] = []
    try:
        ready, errors, connect_s = pool.connect(timeout=90)
        if ready < count:
            return {"error": f"only {ready}/{count} streams ready: {errors[:2]}"}
        for _ in range(reps):
            time.sleep(0.5)
            pool.mark()
            offset = serve.log_offset()
            name, text = world.global_edit(variant.next(), GLOBAL_NETWORKS, GLOBAL_ROUTES)
            t_write = atomic_write(manifests / name, text)
            pool.wait_quiet(quiet=0.5, timeout=30)
            records = pool.collect()
            times, missing = updated_times(records)
            events = wait_events(serve, offset,
                                 lambda ev: any(e.get("event") == "config reloaded" for e in ev), 10)
            sets = [event_time(e) for e in events
                    if e.get("event") == "snapshot set" and e.get("namespace") in namespaces]
            t_snap = min(sets) if sets else t_write
            runs.append({"e2e": [t - t_write for t in times],
                         "push": [max(0.0, t - t_snap) for t in times],
                         "missing": missing, "capture": captured_bytes(records)})
    finally:
        pool.close()
    return {"runs": runs, "connect_s": connect_s}


def measure_baseline(capture: dict[str, Any], namespaces: list[str], count: int, delta: bool,
                     workers: int, tmp: Path, reps: int) -> dict[str, Any]:
    mode = "delta" if delta else "sotw"
    data_path = tmp / f"baseline-{mode}-{count}.pickle"
    data_path.write_bytes(pickle.dumps({mode: capture}))
    proc, address = baseline.start(data_path)
    runs: list[list[float]] = []
    try:
        pool = ClientPool(address, specs(namespaces, count, delta), workers=workers)
        try:
            ready, errors, _ = pool.connect(timeout=90)
            if ready < count:
                return {"error": f"baseline: only {ready}/{count} streams ready: {errors[:2]}"}
            for _ in range(reps):
                time.sleep(0.5)
                pool.mark()
                t0 = _push(address)
                pool.wait_quiet(quiet=0.5, timeout=30)
                times, missing = updated_times(pool.collect())
                if missing:
                    return {"error": f"baseline: {missing} streams got nothing"}
                runs.append([t - t0 for t in times])
        finally:
            pool.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return {"runs": runs}


def _stats(runs: list[list[float]]) -> tuple[float, float, float]:
    """Median over runs of each run's p50, p99 and max."""
    return tuple(statistics.median(percentile(r, p) for r in runs) for p in (50, 99, 100))  # type: ignore[return-value]


def _push(address: str) -> float:
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/bench.Baseline/Push", request_serializer=None,
                                   response_deserializer=None)
        return float(call(b"", timeout=10).decode())


def run(part: PartResult, quick: bool, workers: int = 2) -> None:
    counts = [50, 100] if quick else [100, 500, 1000]
    reps = 1 if quick else 3
    rounds = 1 if quick else 2
    part.notes.append(
        f"{workers} client worker processes (spawned, one HTTP/2 connection per stream); this machine "
        "has 2 cores, so clients and server compete for CPU, and the baseline runs under the same "
        "conditions (same clients, same bytes, same machine, same run; serve and the baseline each in a "
        "session, so a scheduling group, of their own, the clients in the benchmark's).")
    part.notes.append(
        f"world: 10 namespaces + {CONSUMERS} consumer namespaces on the global view ({GLOBAL_NETWORKS} "
        f"global EgressNetworks, {GLOBAL_ROUTES} routes); streams spread over the consumer namespaces; "
        "the change flips global-00 Deny<->Allow (new listener + routes for every stream).")
    part.notes.append("push = from serve's first 'snapshot set' log line to the stream's last ACK written; "
                      "e2e = from the file write; baseline = from its Push call to the last ACK. "
                      f"Each figure is the median over {reps * rounds} changes of that change's p50/p99/max "
                      f"({rounds} rounds alternating egress-xds and the baseline).")
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmpdir:
        tmp = Path(tmpdir)
        manifests = tmp / "manifests"
        namespaces = fanout_world(manifests)
        serve = ServeProcess(manifests, tmp / "serve.log", gc_log=tmp / "gc.log")
        variant = Variant()
        try:
            for delta in (False, True):
                mode = "delta" if delta else "sotw"
                for count in counts:
                    label = f"{count} streams {mode}"
                    big = count == 1000
                    ours_runs: list[dict[str, Any]] = []
                    base_runs: list[list[float]] = []
                    error = ""
                    for _ in range(rounds):  # ours and the baseline alternate: drift hits both
                        ours = measure_ours(serve, manifests, namespaces, count, delta, variant, workers, reps)
                        if "error" in ours:
                            error = ours["error"]
                            break
                        runs = [r for r in ours["runs"] if r["push"]]
                        if not runs:
                            error = "no stream was updated"
                            break
                        ours_runs += ours["runs"]
                        base = measure_baseline(runs[-1]["capture"], namespaces, count, delta, workers,
                                                tmp, reps)
                        if "error" in base:
                            error = base["error"]
                            break
                        base_runs += base["runs"]
                    if error or not ours_runs or not base_runs:
                        part.skip(label, error or "nothing measured")
                        continue
                    missing = sum(r["missing"] for r in ours_runs)
                    good = [r for r in ours_runs if r["push"]]
                    p50, p99, top = _stats([r["push"] for r in good])
                    part.add(f"{label}: push p50/p99/max", f"{ms(p50)} / {ms(p99)} / {ms(top)}",
                             "max < 1000 ms" if big else "", top < 1.0 if big else None,
                             note=f"{missing} stream updates missing" if missing else "")
                    e50, _, etop = _stats([r["e2e"] for r in good])
                    part.add(f"{label}: file write -> all ACKed p50/max", f"{ms(e50)} / {ms(etop)}")
                    b50, b99, btop = _stats(base_runs)
                    part.add(f"{label}: baseline p50/p99/max", f"{ms(b50)} / {ms(b99)} / {ms(btop)}")
                    ratio = top / btop if btop > 0 else float("inf")
                    part.add(f"{label}: ours/baseline (max)", f"{ratio:.2f}x",
                             "<= 1.5x" if big else "", ratio <= 1.5 if big else None,
                             note=f"per stream: ours {top / count * 1e3:.2f} ms, baseline "
                                  f"{btop / count * 1e3:.2f} ms")
        finally:
            serve.stop()
