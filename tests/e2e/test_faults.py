"""Issue 7, faults: ``kill -9`` of the control plane while real traffic flows.

``egress-xds serve`` runs as a subprocess (ADS on a unix socket in the lab), one pod runs an
Envoy sidecar bootstrapped by the product, and a probe thread sends real traffic from the pod
the whole time: allowed and denied plain HTTP, allowed and denied TLS (by SNI), and two paths
whose verdict a manifest edit flips (``/going`` allowed -> denied, ``/later`` denied ->
allowed). Then: SIGKILL serve; keep probing; edit the manifest while it is down; restart
serve on the same socket; wait until Envoy reconnected and runs the edit; keep probing a
little longer.

A wrong verdict is any denied exchange that got through, any allowed exchange that failed,
or a flipped path answering with the other verdict than the phase allows (the old one before
the restart, the new one once Envoy has shown the new one: never back). The test asserts
there are none and reports the counts, the reconnect time (serve restarted -> Envoy's stream
open) and the convergence time (serve restarted -> the edit in force) in the terminal
(``-s``) and as junit properties. Bounded: about 15-25 s, at most ~40 s.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from egress_xds.demo import http_json, start_control_plane, start_sidecar
from egress_xds.lab import Lab, LabProcess, Pod, wait_for

TEN = "203.0.113.10"  # http-10 on :80 and tls-10 on :443 (the lab's standard servers)
NAMESPACE = "team-f"
DOWN_SECONDS = 3.0


def manifests(paths: list[str]) -> list[dict[str, Any]]:
    parent = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": "internet", "port": 0}
    return [
        {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
         "metadata": {"name": "internet", "namespace": "linkerd-egress"},
         "spec": {"trafficPolicy": "Deny"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "paths", "namespace": "linkerd-egress"},
         "spec": {"parentRefs": [{**parent, "port": 80}],
                  "rules": [{"matches": [{"path": {"type": "Exact", "value": p}}]} for p in paths]}},
        {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TLSRoute",
         "metadata": {"name": "allowed-sni", "namespace": "linkerd-egress"},
         "spec": {"parentRefs": [{**parent, "port": 443}], "hostnames": ["allowed.example.com"],
                  "rules": [{"backendRefs": []}]}},
    ]


@dataclass
class Sample:
    at: float
    probe: str
    allowed: bool  # what the client saw: the exchange reached the world server
    detail: str


@dataclass
class Prober:
    """Probes in a loop from a thread until stopped; every result kept with its time."""

    pod: Pod
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def probes(self) -> dict[str, Callable[[], tuple[bool, str]]]:
        def http(path: str) -> Callable[[], tuple[bool, str]]:
            def run() -> tuple[bool, str]:
                r = self.pod.http(TEN, 80, path, timeout=2.0)
                if r.status == 200 and r.server == "http-10":
                    return True, "200"
                if r.status == 403 and r.headers.get("x-egress-denied-by") == "linkerd-egress/internet":
                    return False, "403"
                return False, f"unexpected: {r.outcome} {r.status}"
            return run

        def tls(sni: str) -> Callable[[], tuple[bool, str]]:
            def run() -> tuple[bool, str]:
                r = self.pod.tls(TEN, 443, sni, timeout=2.0)
                if r.ok and r.sni == sni:
                    return True, "handshake"
                return False, "closed" if r.closed else f"unexpected: {r.outcome}"
            return run

        return {"http-allowed": http("/allowed"), "http-denied": http("/denied"),
                "tls-allowed": tls("allowed.example.com"), "tls-denied": tls("denied.example.com"),
                "http-going": http("/going"), "http-later": http("/later")}

    def run(self) -> None:
        probes = self.probes()
        while not self.stop.is_set():
            for name, probe in probes.items():
                try:
                    allowed, detail = probe()
                except Exception as exc:  # recorded, never silently lost
                    allowed, detail = False, f"unexpected: {exc!r}"
                self.samples.append(Sample(time.monotonic(), name, allowed, detail))
            time.sleep(0.02)


def wrong_verdicts(samples: list[Sample], restarted: float) -> tuple[list[Sample], dict[str, float]]:
    """Samples that contradict the policy, and when each flipped path first flipped."""
    wrong: list[Sample] = []
    flipped: dict[str, float] = {}
    fixed = {"http-allowed": True, "http-denied": False, "tls-allowed": True, "tls-denied": False}
    old = {"http-going": True, "http-later": False}
    for s in samples:
        if s.detail.startswith("unexpected"):
            wrong.append(s)
        elif s.probe in fixed:
            if s.allowed != fixed[s.probe]:
                wrong.append(s)
        elif s.allowed == old[s.probe]:
            if s.probe in flipped:  # back to the old verdict after the new one was seen
                wrong.append(s)
        elif s.at < restarted:  # the new verdict before serve came back: impossible
            wrong.append(s)
        else:
            flipped.setdefault(s.probe, s.at)
    return wrong, flipped


def test_kill_9_of_serve_while_traffic_flows(lab: Lab, pod: Pod, tmp_path: Path,
                                             record_property: Any) -> None:
    started = time.monotonic()
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    policy = mdir / "policy.yaml"
    policy.write_text(yaml.safe_dump_all(manifests(["/allowed", "/going"])))
    sock = lab.socket_dir() / f"ads-{tmp_path.name}.sock"
    log = tmp_path / "serve.log"
    serve, debug = start_control_plane([mdir], sock, log)
    prober = Prober(pod)
    thread = threading.Thread(target=prober.run, name="fault-prober", daemon=True)
    procs: list[LabProcess] = [serve]
    try:
        start_sidecar(pod, NAMESPACE, f"unix:{sock}", tmp_path / "boot.yaml", node_id=f"{pod.name}.faults")

        def synced(url: str) -> bool:
            proxies = http_json(url + "/debug/proxies")["proxies"]
            return bool(proxies) and all(t["state"] == "SYNCED" for p in proxies for t in p["types"].values())

        wait_for(lambda: synced(debug), timeout=15, what="sidecar synced")
        wait_for(lambda: pod.http(TEN, 80, "/allowed").status == 200, timeout=10, what="policy in force")
        thread.start()
        time.sleep(1.5)

        # kill -9: no clean shutdown, the ADS stream just dies.
        os.kill(serve.pid, signal.SIGKILL)
        serve.popen.wait(5)
        killed = time.monotonic()
        time.sleep(DOWN_SECONDS / 2)
        tmp = policy.with_suffix(".tmp")  # the edit, while serve is down
        tmp.write_text(yaml.safe_dump_all(manifests(["/allowed", "/later"])))
        os.replace(tmp, policy)
        time.sleep(DOWN_SECONDS / 2)
        down_samples = [s for s in prober.samples if s.at >= killed]

        restarted = time.monotonic()
        serve, debug = start_control_plane([mdir], sock, log)
        procs.append(serve)
        serving = time.monotonic()
        wait_for(lambda: bool(http_json(debug + "/debug/proxies")["proxies"]), timeout=35, interval=0.02,
                 what="Envoy reconnected")
        reconnected = time.monotonic()
        wait_for(lambda: synced(debug), timeout=10, interval=0.02, what="Envoy synced after restart")
        converged = time.monotonic()
        time.sleep(1.5)  # keep probing on the new config
    finally:
        prober.stop.set()
        if thread.is_alive():
            thread.join(10)
        for proc in procs:
            proc.stop()

    wrong, flipped = wrong_verdicts(prober.samples, restarted)
    counts = Counter((s.probe, s.detail) for s in prober.samples)
    numbers = {
        "exchanges": len(prober.samples),
        "exchanges_while_down": len(down_samples),
        "wrong_verdicts": len(wrong),
        "serve_start_ms": round((serving - restarted) * 1000),
        "reconnect_ms": round((reconnected - restarted) * 1000),
        "synced_ms": round((converged - restarted) * 1000),
        "edit_in_force_ms": {p: round((t - restarted) * 1000) for p, t in flipped.items()},
        "down_s": round(restarted - killed, 2),
        "total_s": round(time.monotonic() - started, 1),
    }
    for key, value in numbers.items():
        record_property(key, value)
    print(f"\nkill -9 episode: {json.dumps(numbers)}\nverdicts: "
          + ", ".join(f"{p} {d}: {n}" for (p, d), n in sorted(counts.items())))
    assert not wrong, f"{len(wrong)} wrong verdicts: {wrong[:10]}\n{numbers}"
    assert set(flipped) == {"http-going", "http-later"}, f"the edit never applied: {numbers}"
    assert len(down_samples) >= 12, f"too few exchanges while serve was down: {numbers}"
    # After convergence the last samples of the flipped paths show the new verdicts.
    last = {s.probe: s for s in prober.samples}
    assert not last["http-going"].allowed and last["http-later"].allowed
    assert pod.envoy is not None and pod.envoy.alive(), "Envoy died"
