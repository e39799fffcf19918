"""Part 3, propagation through a real Envoy: file write -> first allowed request.

Needs root and network namespaces (``egress_xds.lab``); otherwise the part is skipped with the
reason. ``serve`` runs in the root namespace with ADS on a unix socket in the lab's socket
directory; one pod runs Envoy (bootstrap from ``egress_xds.bootstrap``, SotW), its traffic
captured by ``envoy/capture.sh``. Namespace ``bench-prop`` holds one Deny EgressNetwork (every
public address) and one HTTPRoute on port 80 (so port 80 already has its chains and each trial
is a route change). Trial i writes a new file with an HTTPRoute for host
``trial-i.example.com`` and polls ``GET http://203.0.113.10/`` with that Host from the pod
(new connection each time, 403 until the route arrives) until it gets 200; then it removes the
file again, so every trial adds one route to the same world. Plain HTTP is detected at once,
so ``--detect-timeout`` plays no part.

Run with 0 and with 500 other connected ADS streams, first in 50 other namespaces (the change
reaches none of them: what a one-namespace change costs a control plane that has many
sidecars), then in the Envoy's own namespace (each trial then pushes to all 501). ``serve``
wakes a namespace's streams oldest first, so there the Envoy is measured twice: its stream
older than the others (pushed first), then, after an Envoy restart, newer than all of them
(pushed last: it waits for the whole fan-out). The 500 simulated sidecars run at nice 19: on
a cluster they live on other nodes, here they would take the 2 cores from the Envoy and the
server under test. The nice value is also set on a scheduling group of their own
(``bench.clients.lower_priority``): with autogroup scheduling a plain ``os.nice`` ranks a
process only within its session, and ``serve`` and Envoy each run in one of their own, so
until 2026-11-27 the niced clients still took half of a contended core from them.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import world
from bench.clients import ClientPool, specs
from bench.common import PartResult, ServeProcess, ms, percentile

NAMESPACE = "bench-prop"
TARGET_IP = "203.0.113.10"


def _why_not() -> str | None:
    try:
        from egress_xds.lab import unavailable_reason
    except ImportError as err:
        return f"the lab cannot be imported: {err}"
    return unavailable_reason()


def _route_applied(pod: object) -> float:
    """When Envoy last applied a route configuration: the largest RDS ``update_time`` gauge
    (ms since the epoch, set by Envoy itself), in seconds."""
    gauges = pod.stats(r"\.rds\..*update_time$")  # type: ignore[attr-defined]
    return max(gauges.values(), default=0) / 1000.0


def _trial(pod: object, manifests: Path, label: str, timeout: float = 10.0) -> float | None:
    host = f"{label}.example.com"
    text = world.http_route(NAMESPACE, label, "deny", 80, host, "/")
    tmp = manifests / f".{label}.tmp"
    tmp.write_text(text)
    started = time.time()
    os.replace(tmp, manifests / f"{label}.yaml")
    while time.time() - started < timeout:
        r = pod.http(TARGET_IP, 80, "/", host=host, timeout=2)  # type: ignore[attr-defined]
        if r.status == 200:
            return time.time() - started
    return None


def run(part: PartResult, quick: bool) -> None:
    reason = _why_not()
    if reason is not None:
        part.skip("real-Envoy propagation", f"lab unavailable: {reason}")
        return
    from egress_xds.bootstrap import BootstrapOptions, render
    from egress_xds.lab import Lab, WorldServer

    trials = 5 if quick else 20
    count = 50 if quick else 500
    part.notes.append(
        "each trial writes one HTTPRoute file and removes it after its first 200 (every trial adds one route to "
        "the same world); the other streams are 2 client processes at nice 19, each in a scheduling group of its "
        "own niced to 19 (sidecars of other nodes: they must not take the cores from the Envoy and serve under "
        "test; bench.clients.lower_priority), wildcard SotW like the Envoy")
    # (other streams, their namespaces): none; elsewhere (not reached by the change); here.
    others = [(0, []), (count, [f"bench-other-{i:02d}" for i in range(50)]), (count, [NAMESPACE])]
    with tempfile.TemporaryDirectory(prefix="bench-prop-") as tmpdir, Lab() as lab:
        tmp = Path(tmpdir)
        manifests = tmp / "manifests"
        manifests.mkdir()
        (manifests / "base.yaml").write_text(
            world._en(NAMESPACE, "deny", "Deny", []) + "---\n"
            + world.http_route(NAMESPACE, "base", "deny", 80, "base.example.com", "/"))
        lab.serve([WorldServer.http(TARGET_IP, 80, "http-10")])
        socket_path = lab.socket_dir() / "ads.sock"
        serve = ServeProcess(manifests, tmp / "serve.log", ads=f"unix:{socket_path}")
        try:
            pod = lab.add_pod("bench")
            bootstrap = tmp / "bootstrap.yaml"
            bootstrap.write_text(render(BootstrapOptions(namespace=NAMESPACE, ads=f"unix:{socket_path}",
                                                         node_id="bench-envoy")))
            pod.start_envoy(bootstrap, extra_args=("--file-flush-interval-msec", "100"))
            pod.wait_for_listener()
            pod.capture()
            first = pod.http(TARGET_IP, 80, "/", host="nobody.example.com")
            if first.status != 403:
                part.skip("real-Envoy propagation", f"expected 403 before any trial, got {first.status} "
                          f"{first.outcome}: {pod.envoy_log(1500)}")
                return
            n = 0
            for other, where in others:
                pool = None
                if other:
                    pool = ClientPool(f"unix:{socket_path}", specs(where, other, False, "prop"), nice=19)
                    ready, errors, _ = pool.connect(timeout=120)
                    if ready < other:
                        part.skip(f"with {other} other streams", f"only {ready}/{other}: {errors[:2]}")
                        pool.close()
                        continue
                # serve wakes a namespace's streams oldest first: with other streams, measure
                # the Envoy's stream as the oldest (pushed first) and, after restarting Envoy,
                # as the newest (pushed after all the others).
                positions = ["oldest", "newest"] if NAMESPACE in where else [""]
                try:
                    for position in positions:
                        if position == "newest":
                            pod.stop_envoy()
                            pod.start_envoy(bootstrap, extra_args=("--file-flush-interval-msec", "100"))
                            pod.wait_for_listener()
                        latencies = []
                        applied = []  # file write -> Envoy applied the new routes (its own clock)
                        failed = 0
                        for _ in range(trials):
                            n += 1
                            written = time.time()
                            got = _trial(pod, manifests, f"trial-{n}")
                            if got is None:
                                failed += 1
                            else:
                                latencies.append(got)
                                applied.append(_route_applied(pod) - written)
                            (manifests / f"trial-{n}.yaml").unlink()
                            time.sleep(0.3)  # let the removal settle (pushes and acks from every stream)
                        label = f"{other} other streams" + (
                            " in 50 other namespaces" if other and not position else "") + (
                            f", Envoy's stream the {position} (pushed {'first' if position == 'oldest' else 'last'})"
                            if position else "")
                        if not latencies:
                            part.skip(f"with {label}", f"no trial saw its route within 10 s ({failed} failed)")
                            continue
                        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                        note = f"{len(latencies)} trials" + (f", {failed} never allowed within 10 s" if failed else "")
                        part.add(f"HTTPRoute added -> first 200, {label}: p50", ms(p50),
                                 "< 50 ms", p50 < 0.050, note=note)
                        part.add(f"HTTPRoute added -> first 200, {label}: p99", ms(p99),
                                 "< 150 ms", p99 < 0.150)
                        part.add(f"HTTPRoute added -> Envoy applied it, {label}: p50 / p99",
                                 f"{ms(percentile(applied, 50))} / {ms(percentile(applied, 99))}",
                                 note="Envoy's own RDS update_time gauge: serve's part and Envoy's, "
                                      "without the test client and upstream (ms resolution)")
                finally:
                    if pool is not None:
                        pool.close()
        finally:
            serve.stop()
