"""Issue 4 end to end: `egress-xds serve` + real Envoy sidecars + real TLS/HTTP/TCP/gRPC.

One control plane (``egress-xds serve`` on a watched manifest directory, ADS on a unix socket)
and two sidecars for the whole module: a pod in ``team-a`` (SotW ADS) and one in ``team-b``
(delta ADS), both bootstrapped by the product's bootstrap renderer. Each test writes its
manifests (the directory is replaced; serve picks the change up live, Envoy is never
restarted), waits until every sidecar acknowledged the new snapshot, then makes requests.

Every request goes through :class:`Checker`: it asks ``egress-xds explain -o json`` about
the same (namespace, IP, port, SNI/Host/path), performs the exchange from the pod, and
requires (1) explain's verdict to be what the scenario expects, (2) the real traffic to
agree with explain (forward/redirect: the expected world server answered, with the
client's SNI/Host; deny: HTTP 403 naming the EgressNetwork, gRPC PERMISSION_DENIED, TLS/TCP
closed; invalid: HTTP 500, gRPC UNKNOWN, TLS/TCP closed), and (3) Envoy's access log line
for that exchange to name the same namespace, EgressNetwork, port and route.
A table of every exchange (``-v``: all of them; otherwise the mismatches) and the measured
live-change times are printed in the terminal summary.

Scenarios (issue 4): deny/allow without routes; HTTPRoute exact path; TLSRoute by SNI;
TCPRoute on one port; Service backends for HTTP, TLS and TCP; a local EgressNetwork hiding
the global ones; consumer versus producer routes; ``except`` ranges and overlapping networks
(smallest block, then age, then name); the port-sieve trap; live change without restarting
Envoy (timed); stats and access log attribution; plus gRPC (GRPCRoute, PERMISSION_DENIED in
an HTTP 200, UNKNOWN for an invalid backend, a Service backend), invalid backends (500 /
closed), hostnames/methods/filters, rewrites and redirects, a non-accepted EgressNetwork,
and Envoy keeping its config while serve restarts.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from egress_xds.demo import (
    Observation,
    Probe,
    access_log_entries,
    attribution_problems,
    disagreements,
    explain_probe,
    find_log_entry,
    http_json,
    observe,
    start_control_plane,
    start_sidecar,
)
from egress_xds.lab import Lab, LabError, LabProcess, Pod, WorldServer, standard_servers, wait_for

GLOBAL = "linkerd-egress"
TEAM_A, TEAM_B = "team-a", "team-b"
TEN, ELEVEN, TWELVE = "203.0.113.10", "203.0.113.11", "203.0.113.12"
SVC = "203.0.113.20"  # stands in for a Service clusterIP
B200, B230 = "203.0.113.200", "203.0.113.230"
INTERNET = f"{GLOBAL}/internet"

EXTRA_SERVERS = [
    WorldServer.tcp(TEN, 5432, "pg-10"),  # 5432 is an opaque port: no protocol detection
    WorldServer.tcp(ELEVEN, 5432, "pg-11"),
    WorldServer.http(TWELVE, 80, "http-12"),
    WorldServer.tls(TWELVE, 443, "tls-12"),
    WorldServer.http(SVC, 8080, "svc-http"),
    WorldServer.tls(SVC, 8443, "svc-tls"),
    WorldServer.tcp(SVC, 9100, "svc-tcp"),
    WorldServer.grpc(SVC, 50052, "svc-grpc"),
    WorldServer.http(B200, 80, "http-200"),
    WorldServer.tls(B200, 443, "tls-200"),
    WorldServer.http(B230, 80, "http-230"),
    WorldServer.tls(B230, 443, "tls-230"),
]
WORLD = {f"{s.address}:{s.port}": s.name for s in [*standard_servers(), *EXTRA_SERVERS]}

# ---- manifests -------------------------------------------------------------------------------

Doc = dict[str, Any]


def egress_network(name: str, policy: str, *, namespace: str = GLOBAL,
                   networks: Sequence[Mapping[str, Any]] | None = None,
                   created: str | None = None) -> Doc:
    spec: Doc = {"trafficPolicy": policy}
    if networks is not None:
        spec["networks"] = [dict(n) for n in networks]
    metadata: Doc = {"name": name, "namespace": namespace}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "EgressNetwork",
            "metadata": metadata, "spec": spec}


def parent(name: str, port: int, namespace: str | None = None) -> Doc:
    ref: Doc = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": name, "port": port}
    if namespace is not None:
        ref["namespace"] = namespace
    return ref


def backend(name: str, port: int | None = None, **extra: Any) -> Doc:
    ref: Doc = {"name": name, **extra}
    if port is not None:
        ref["port"] = port
    return ref


def route(kind: str, name: str, parents: Sequence[Doc], rules: Sequence[Doc], *,
          namespace: str = GLOBAL, hostnames: Sequence[str] | None = None) -> Doc:
    version = {"HTTPRoute": "v1", "GRPCRoute": "v1"}.get(kind, "v1alpha2")
    spec: Doc = {"parentRefs": list(parents), "rules": list(rules)}
    if hostnames is not None:
        spec["hostnames"] = list(hostnames)
    return {"apiVersion": f"gateway.networking.k8s.io/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def path_rule(kind: str, value: str, backends: Sequence[Doc] | None = None) -> Doc:
    rule: Doc = {"matches": [{"path": {"type": kind, "value": value}}]}
    if backends is not None:
        rule["backendRefs"] = list(backends)
    return rule


def service(name: str, cluster_ip: str, ports: Mapping[str, int], namespace: str = GLOBAL) -> Doc:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip,
                     "ports": [{"name": n, "port": p} for n, p in ports.items()]}}


def internet(policy: str) -> Doc:
    """The global EgressNetwork without ``networks``: every address outside the cluster."""
    return egress_network("internet", policy)


# ---- control plane and sidecars --------------------------------------------------------------


@dataclass
class Sidecar:
    pod: Pod
    namespace: str


class ControlPlane:
    """``egress-xds serve`` on a manifest directory this test module rewrites."""

    MARKER = "zz-generation.yaml"

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.dir = workdir / "manifests"
        self.staging = workdir / "staging"
        self.dir.mkdir(parents=True)
        self.staging.mkdir()
        self.sock = lab.socket_dir() / f"ads-{workdir.name}.sock"
        self.log = workdir / "serve.log"
        self.generation = 0
        self.sidecars: list[Sidecar] = []
        self._write_marker()
        self.proc: LabProcess
        self.start()

    def start(self) -> None:
        self.proc, self.debug_url = start_control_plane(
            [self.dir], self.sock, self.log, extra=["--detect-timeout", "1"])

    @property
    def ads(self) -> str:
        return f"unix:{self.sock}"

    def write(self, name: str, docs: Sequence[Doc]) -> None:
        """Atomically (re)place one manifest file (written beside, then renamed in)."""
        tmp = self.staging / name
        tmp.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        os.replace(tmp, self.dir / name)

    def remove(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)

    def apply(self, files: Mapping[str, Sequence[Doc]]) -> None:
        """Make the directory hold exactly ``files``; return once every sidecar runs it."""
        for old in self.dir.iterdir():
            if old.name not in files and old.name != self.MARKER:
                old.unlink()
        for name, docs in files.items():
            self.write(name, docs)
        self.sync()

    def _write_marker(self) -> None:
        # A Service in a namespace of its own: once its namespace has a snapshot, serve has
        # loaded everything written before it.
        self.write(self.MARKER, [service(f"gen-{self.generation}", "203.0.113.254", {"m": 1},
                                         namespace=f"e2e-gen-{self.generation}")])

    def sync(self, timeout: float = 15.0) -> None:
        self.generation += 1
        self._write_marker()
        marker = f"e2e-gen-{self.generation}"
        wait_for(lambda: marker in http_json(self.debug_url + "/debug/snapshots")["snapshots"],
                 timeout=timeout, what=f"serve loading generation {self.generation}")
        self.wait_synced(timeout)

    def proxies(self) -> list[dict[str, Any]]:
        proxies: list[dict[str, Any]] = http_json(self.debug_url + "/debug/proxies")["proxies"]
        return proxies

    def wait_synced(self, timeout: float = 15.0) -> None:
        """Every sidecar acknowledged its namespace's current snapshot, no listener warming."""
        def synced() -> bool:
            proxies = self.proxies()
            for sidecar in self.sidecars:
                mine = [p for p in proxies if p["namespace"] == sidecar.namespace]
                if not mine or any(t["state"] != "SYNCED" for p in mine for t in p["types"].values()):
                    return False
                if sidecar.pod.stat("listener_manager.total_listeners_warming") != 0:
                    return False
            return True

        try:
            wait_for(synced, timeout=timeout, what="sidecars synced")
        except LabError as exc:
            raise LabError(f"{exc}\n/debug/proxies: {json.dumps(self.proxies(), indent=1)}\n"
                           f"serve log:\n{self.proc.log(3000)}") from None

    def add_sidecar(self, lab: Lab, namespace: str, *, delta: bool = False) -> Sidecar:
        pod = lab.add_pod(namespace)
        try:
            start_sidecar(pod, namespace, self.ads, lab.workdir / f"{pod.name}-boot.yaml",
                          delta=delta, node_id=f"{pod.name}.{namespace}")
        except BaseException:
            lab.remove_pod(pod)
            raise
        sidecar = Sidecar(pod, namespace)
        self.sidecars.append(sidecar)
        return sidecar

    def stop(self) -> None:
        self.proc.stop()


# ---- explain versus reality --------------------------------------------------------------------


@dataclass
class Record:
    test: str
    namespace: str
    probe: Probe
    expect: str
    verdict: dict[str, Any]
    obs: Observation
    problems: list[str] = field(default_factory=list)  # explain vs the real exchange
    intent: list[str] = field(default_factory=list)  # explain/traffic vs the scenario
    log_problems: list[str] = field(default_factory=list)  # explain vs Envoy's access log

    @property
    def agrees(self) -> bool:
        """explain agrees with the traffic and with Envoy's access log."""
        return not self.problems and not self.log_problems

    def line(self) -> str:
        v = self.verdict
        state = ("EXPLAIN!=REAL" if self.problems else "EXPLAIN!=LOG" if self.log_problems
                 else "UNEXPECTED" if self.intent else "ok")
        return (f"{state:13} {self.namespace:7} {self.probe.describe():60} explain: "
                f"{v['action']:8} {v['egress_network'] or '-'} / {v['route'] or '-'}; "
                f"real: {self.obs.summary()}")


RECORDS: list[Record] = []
TIMINGS: dict[str, float] = {}


class Checker:
    """Explain, perform, compare; :meth:`verify` also checks Envoy's access log and fails
    the test with every mismatch."""

    def __init__(self, cp: ControlPlane, test: str) -> None:
        self.cp = cp
        self.test = test
        self.records: list[tuple[Sidecar, Record]] = []
        self.verified = False

    def check(self, sidecar: Sidecar, probe: Probe, expect: str | None, *, server: str | None = None,
              by: str | None = None, route: str | None = None,
              world: Mapping[str, str] = WORLD) -> Observation:
        """``expect``: explain's action (forward/redirect/deny/invalid); ``server``: the world
        server that must answer; ``by``/``route``: the EgressNetwork and route explain must
        name ('' for none). ``expect=None``: only require explain and reality to agree."""
        verdict = explain_probe([self.cp.dir], sidecar.namespace, probe)
        obs = observe(sidecar.pod, probe)
        problems = disagreements(probe, verdict, obs, world)
        intent: list[str] = []
        if expect is not None and verdict["action"] != expect:
            intent.append(f"explain says {verdict['action']}, the scenario expects {expect}")
        if server is not None and obs.server != server:
            intent.append(f"the scenario expects {server} to answer, got: {obs.summary()}")
        if by is not None and (verdict["egress_network"] or "") != by:
            intent.append(f"explain names EgressNetwork {verdict['egress_network']!r}, "
                            f"the scenario expects {by!r}")
        if route is not None and (verdict["route"] or "") != route:
            intent.append(f"explain names route {verdict['route']!r}, the scenario expects {route!r}")
        record = Record(self.test, sidecar.namespace, probe, expect or verdict["action"], verdict, obs,
                        problems, intent)
        self.records.append((sidecar, record))
        RECORDS.append(record)
        return obs

    def verify(self, *, log_timeout: float = 5.0) -> None:
        """Match every exchange with its access log line, then fail on any mismatch."""
        self.verified = True

        def matched() -> bool:
            entries: dict[int, list[dict[str, Any]]] = {}
            taken: set[int] = set()
            for sidecar, record in self.records:
                key = id(sidecar)
                if key not in entries:
                    entries[key] = access_log_entries(sidecar.pod.envoy_log(tail=2_000_000))
                entry = find_log_entry(entries[key], record.probe, record.obs, taken=taken)
                record.log_problems = attribution_problems(sidecar.namespace, record.probe,
                                                           record.verdict, record.obs, entry)
            return all(r.log_problems != ["no access log line for this exchange"]
                       for _, r in self.records)

        try:
            wait_for(matched, timeout=log_timeout, interval=0.1, what="access log lines")
        except LabError:
            pass  # reported per exchange below
        bad = [r for _, r in self.records if r.problems or r.intent or r.log_problems]
        if bad:
            lines = []
            for r in bad:
                lines.append(r.line())
                lines += [f"    - explain vs real traffic: {p}" for p in r.problems]
                lines += [f"    - scenario: {p}" for p in r.intent]
                lines += [f"    - access log: {p}" for p in r.log_problems]
            pytest.fail(f"{len(bad)} of {len(self.records)} exchanges mismatched:\n" + "\n".join(lines),
                        pytrace=False)


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(lab: Lab) -> Iterator[dict[str, str]]:
    proc = lab.serve(EXTRA_SERVERS)
    try:
        yield WORLD
    finally:
        lab.world.stop(proc)


@pytest.fixture(scope="module")
def cp(lab: Lab, world: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
       request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    _register_summary(request.config)
    plane = ControlPlane(lab, tmp_path_factory.mktemp("scenarios"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def team_a(lab: Lab, cp: ControlPlane) -> Iterator[Sidecar]:
    sidecar = cp.add_sidecar(lab, TEAM_A)
    yield sidecar
    cp.sidecars.remove(sidecar)
    lab.remove_pod(sidecar.pod)


@pytest.fixture(scope="module")
def team_b(lab: Lab, cp: ControlPlane) -> Iterator[Sidecar]:
    sidecar = cp.add_sidecar(lab, TEAM_B, delta=True)
    yield sidecar
    cp.sidecars.remove(sidecar)
    lab.remove_pod(sidecar.pod)


@pytest.fixture
def checker(cp: ControlPlane, team_a: Sidecar, team_b: Sidecar,
            request: pytest.FixtureRequest) -> Iterator[Checker]:
    check = Checker(cp, request.node.name)
    yield check
    if not check.verified and check.records:
        raise AssertionError(f"{request.node.name}: Checker.verify() was never called")


class _Summary:
    """A plugin registered by the ``cp`` fixture: prints the explain-vs-reality table and the
    live-change timings in pytest's terminal summary (``-v``: every exchange)."""

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if not RECORDS:
            return
        agree = sum(1 for r in RECORDS if r.agrees)
        expected = sum(1 for r in RECORDS if not r.intent)
        terminalreporter.write_sep("-", f"explain vs reality: {agree}/{len(RECORDS)} exchanges agree "
                                        f"(verdict = client outcome = access log); "
                                        f"{expected}/{len(RECORDS)} as the scenarios expect")
        verbose = config.getoption("verbose") > 0
        for record in RECORDS:
            if verbose or not record.agrees or record.intent:
                terminalreporter.write_line(f"{record.test[:40]:40} {record.line()}")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"live change: {name}: {seconds * 1000:.0f} ms")


def _register_summary(config: pytest.Config) -> None:
    if not any(isinstance(p, _Summary) for p in config.pluginmanager.get_plugins()):
        config.pluginmanager.register(_Summary(), "egress-xds-e2e-summary")


# ---- scenarios -------------------------------------------------------------------------------

HTTP_10 = Probe("http", TEN, 80, host="a.example.com", path="/x")
TLS_10 = Probe("tls", TEN, 443, sni="a.example.com")
PG_10 = Probe("tcp", TEN, 5432)  # opaque port
TCP_10 = Probe("tcp", TEN, 9000, payload="not http, not tls: opaque bytes on a detected port")
GRPC_10 = Probe("grpc", TEN, 50051, path="/lab.Echo/Call")


def test_deny_without_routes_answers_403_and_closes_tls_and_tcp(cp: ControlPlane, team_a: Sidecar,
                                                                checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")]})
    obs = checker.check(team_a, HTTP_10, "deny", by=INTERNET, route="default")
    assert obs.raw.body == "traffic not allowed"
    assert obs.raw.headers.get("x-egress-denied-by") == INTERNET
    checker.check(team_a, TLS_10, "deny", by=INTERNET)
    checker.check(team_a, PG_10, "deny", by=INTERNET)
    checker.check(team_a, TCP_10, "deny", by=INTERNET)
    checker.check(team_a, GRPC_10, "deny", by=INTERNET)
    checker.verify()


def test_allow_without_routes_reaches_the_world(cp: ControlPlane, team_a: Sidecar,
                                                checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Allow")]})
    checker.check(team_a, HTTP_10, "forward", server="http-10", by=INTERNET, route="default")
    checker.check(team_a, TLS_10, "forward", server="tls-10")
    checker.check(team_a, Probe("tls", ELEVEN, 443, sni=None), "forward", server="tls-11")
    checker.check(team_a, PG_10, "forward", server="pg-10")
    checker.check(team_a, TCP_10, "forward", server="tcp-10")
    checker.check(team_a, GRPC_10, "forward", server="grpc-10")
    checker.verify()


def test_deny_with_http_route_exact_path(cp: ControlPlane, team_a: Sidecar, team_b: Sidecar,
                                         checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [route("HTTPRoute", "exact-path", [parent("internet", 80)],
                                    [path_rule("Exact", "/allowed")])]})
    exact = f"HTTPRoute {GLOBAL}/exact-path"
    checker.check(team_a, Probe("http", TEN, 80, host="a.example.com", path="/allowed"), "forward",
                  server="http-10", route=exact)
    checker.check(team_a, Probe("http", ELEVEN, 80, path="/allowed"), "forward", server="http-11")
    checker.check(team_a, Probe("http", TEN, 80, path="/allowed/more"), "deny", route="default")
    checker.check(team_a, Probe("http", TEN, 80, path="/other"), "deny", by=INTERNET)
    checker.check(team_a, TLS_10, "deny")
    # team-b has no objects of its own: the global network and its producer route apply.
    checker.check(team_b, Probe("http", TEN, 80, path="/allowed"), "forward", server="http-10")
    checker.check(team_b, Probe("http", TEN, 80, path="/other"), "deny", by=INTERNET)
    # Not HTTP on the HTTPRoute's port, and HTTP on an opaque port: closed, no 403.
    checker.check(team_a, Probe("tcp", TEN, 80, payload="\x00\x01 definitely not an HTTP request line"),
                  "deny")
    checker.check(team_a, Probe("http", TEN, 5432, path="/allowed"), "deny")
    checker.verify()


def test_deny_with_tls_route_for_one_sni(cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [route("TLSRoute", "api", [parent("internet", 443)], [{"backendRefs": []}],
                                    hostnames=["api.example.com"])]})
    checker.check(team_a, Probe("tls", TEN, 443, sni="api.example.com"), "forward", server="tls-10",
                  route=f"TLSRoute {GLOBAL}/api")
    checker.check(team_a, Probe("tls", ELEVEN, 443, sni="api.example.com"), "forward", server="tls-11")
    checker.check(team_a, Probe("tls", TEN, 443, sni="other.example.com"), "deny")
    checker.check(team_a, Probe("tls", TEN, 443, sni=None), "deny")
    checker.check(team_a, HTTP_10, "deny")
    checker.verify()


def test_explain_names_the_consequence_for_http_bytes_on_non_http_ports(
        cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    partners = egress_network("partners", "Allow", networks=[{"cidr": "203.0.113.0/25"}])
    partners["metadata"]["annotations"] = {"config.linkerd.io/opaque-ports": "80"}
    cp.apply({"egress.yaml": [internet("Deny"), partners],
              "routes.yaml": [route("TLSRoute", "api", [parent("internet", 443)], [{"backendRefs": []}],
                                    hostnames=["api.example.com"])]})
    # Both are denied (explain agrees on the action), but closed, not answered 403.
    checker.check(team_a, Probe("http", B200, 443, host="api.example.com"), "deny")
    checker.check(team_a, Probe("http", B200, 5432), "deny")
    # Controls that agree: the same bytes where the policy is HTTP / every network is opaque.
    checker.check(team_a, Probe("http", B200, 80), "deny")
    checker.check(team_a, Probe("tcp", B200, 5432), "deny")
    checker.verify()


def test_deny_with_tcp_route_on_one_port(cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [route("TCPRoute", "echo", [parent("internet", 9000)], [{"backendRefs": []}])]})
    checker.check(team_a, TCP_10, "forward", server="tcp-10", route=f"TCPRoute {GLOBAL}/echo")
    checker.check(team_a, Probe("tcp", ELEVEN, 9000, payload="x"), "forward", server="tcp-11")
    checker.check(team_a, HTTP_10, "deny", by=INTERNET)
    checker.check(team_a, PG_10, "deny")
    checker.verify()


def test_allow_with_routes_to_a_service_backend(cp: ControlPlane, team_a: Sidecar,
                                                checker: Checker) -> None:
    gw = [backend("egress-gw", 8080)]
    cp.apply({
        "egress.yaml": [internet("Allow"),
                        service("egress-gw", SVC, {"http": 8080, "tls": 8443, "tcp": 9100})],
        "routes.yaml": [
            route("HTTPRoute", "to-gw", [parent("internet", 80)], [path_rule("PathPrefix", "/gw", gw)]),
            route("TLSRoute", "to-gw", [parent("internet", 443)],
                  [{"backendRefs": [backend("egress-gw", 8443)]}], hostnames=["gw.example.com"]),
            route("TCPRoute", "to-gw", [parent("internet", 9000)],
                  [{"backendRefs": [backend("egress-gw", 9100)]}]),
        ],
    })
    obs = checker.check(team_a, Probe("http", TEN, 80, host="shop.example.com", path="/gw/orders"),
                        "redirect", server="svc-http", route=f"HTTPRoute {GLOBAL}/to-gw")
    assert obs.raw.json["path"] == "/gw/orders"
    checker.check(team_a, Probe("http", TEN, 80, host="shop.example.com", path="/gwx"), "forward",
                  server="http-10", route="default")
    checker.check(team_a, Probe("http", ELEVEN, 80, path="/other"), "forward", server="http-11")
    checker.check(team_a, Probe("tls", TEN, 443, sni="gw.example.com"), "redirect", server="svc-tls")
    checker.check(team_a, Probe("tls", TEN, 443, sni="www.example.com"), "forward", server="tls-10")
    checker.check(team_a, Probe("tcp", ELEVEN, 9000, payload="to the gateway"), "redirect",
                  server="svc-tcp")
    checker.verify()


def test_local_egress_network_hides_the_global_ones(cp: ControlPlane, team_a: Sidecar, team_b: Sidecar,
                                                    checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")],
              "team-b.yaml": [egress_network("own", "Allow", namespace=TEAM_B,
                                             networks=[{"cidr": f"{TEN}/32"}])]})
    checker.check(team_b, Probe("http", TEN, 80), "forward", server="http-10", by=f"{TEAM_B}/own")
    # 203.0.113.11 is not covered by team-b's own network: the fallback forwards it, the
    # global Deny does not apply to team-b at all.
    checker.check(team_b, Probe("http", ELEVEN, 80), "forward", server="http-11", by="")
    checker.check(team_b, Probe("tls", ELEVEN, 443, sni="x.example.com"), "forward", server="tls-11", by="")
    checker.check(team_a, Probe("http", TEN, 80), "deny", by=INTERNET)
    checker.check(team_a, Probe("http", ELEVEN, 80), "deny", by=INTERNET)
    checker.verify()


def test_consumer_routes_apply_only_to_their_namespace(cp: ControlPlane, team_a: Sidecar,
                                                       team_b: Sidecar, checker: Checker) -> None:
    cp.apply({
        "egress.yaml": [internet("Deny")],
        "producer.yaml": [route("HTTPRoute", "producer", [parent("internet", 80)],
                                [path_rule("Exact", "/producer")])],
        "consumer.yaml": [
            route("HTTPRoute", "consumer", [parent("internet", 80, GLOBAL)],
                  [path_rule("Exact", "/consumer")], namespace=TEAM_A),
            route("TLSRoute", "consumer", [parent("internet", 443, GLOBAL)], [{"backendRefs": []}],
                  namespace=TEAM_B, hostnames=["b.example.com"]),
        ],
    })
    checker.check(team_a, Probe("http", TEN, 80, path="/consumer"), "forward", server="http-10",
                  route=f"HTTPRoute {TEAM_A}/consumer")
    checker.check(team_a, Probe("http", TEN, 80, path="/producer"), "forward", server="http-10")
    checker.check(team_a, Probe("tls", TEN, 443, sni="b.example.com"), "deny")
    checker.check(team_b, Probe("http", TEN, 80, path="/consumer"), "deny", by=INTERNET)
    checker.check(team_b, Probe("http", TEN, 80, path="/producer"), "forward", server="http-10")
    checker.check(team_b, Probe("tls", TEN, 443, sni="b.example.com"), "forward", server="tls-10",
                  route=f"TLSRoute {TEAM_B}/consumer")
    checker.verify()


def test_except_ranges_and_overlapping_networks_smallest_block_wins(cp: ControlPlane, team_a: Sidecar,
                                                                    checker: Checker) -> None:
    cp.apply({"egress.yaml": [
        internet("Deny"),
        egress_network("partners", "Allow", networks=[
            {"cidr": "203.0.113.0/25", "except": [f"{ELEVEN}/32"]}]),
        egress_network("one", "Deny", networks=[{"cidr": f"{TEN}/32"}]),
        # .224-.255 (36 hosts): smaller than `wide` (62 hosts) although its prefix is shorter.
        egress_network("narrow", "Allow", networks=[
            {"cidr": "203.0.113.0/24",
             "except": ["203.0.113.0/25", "203.0.113.128/26", "203.0.113.192/27"]}]),
        egress_network("wide", "Deny", networks=[{"cidr": "203.0.113.192/26"}]),
    ]})
    checker.check(team_a, Probe("http", TEN, 80), "deny", by=f"{GLOBAL}/one")
    checker.check(team_a, Probe("http", ELEVEN, 80), "deny", by=INTERNET)  # excepted from partners
    checker.check(team_a, Probe("http", TWELVE, 80), "forward", server="http-12", by=f"{GLOBAL}/partners")
    checker.check(team_a, Probe("tls", TWELVE, 443, sni="p.example.com"), "forward", server="tls-12")
    checker.check(team_a, Probe("http", B200, 80), "deny", by=f"{GLOBAL}/wide")
    checker.check(team_a, Probe("tls", B200, 443, sni="w.example.com"), "deny", by=f"{GLOBAL}/wide")
    checker.check(team_a, Probe("http", B230, 80), "forward", server="http-230", by=f"{GLOBAL}/narrow")
    checker.check(team_a, Probe("tls", B230, 443, sni="n.example.com"), "forward", server="tls-230")
    checker.verify()


def test_equal_blocks_oldest_creation_timestamp_wins(cp: ControlPlane, team_a: Sidecar,
                                                      checker: Checker) -> None:
    cp.apply({"egress.yaml": [
        internet("Deny"),
        egress_network("a-newer", "Deny", networks=[{"cidr": f"{TEN}/32"}], created="2024-05-01T00:00:00Z"),
        egress_network("b-older", "Allow", networks=[{"cidr": f"{TEN}/32"}], created="2020-05-01T00:00:00Z"),
        # same size and age (none given = oldest): the name decides
        egress_network("d-later-name", "Allow", networks=[{"cidr": f"{ELEVEN}/32"}]),
        egress_network("c-first-name", "Deny", networks=[{"cidr": f"{ELEVEN}/32"}]),
    ]})
    checker.check(team_a, Probe("http", TEN, 80), "forward", server="http-10", by=f"{GLOBAL}/b-older")
    checker.check(team_a, Probe("tls", TEN, 443, sni="t.example.com"), "forward", server="tls-10")
    checker.check(team_a, Probe("http", ELEVEN, 80), "deny", by=f"{GLOBAL}/c-first-name")
    checker.verify()


def test_non_accepted_egress_network_enforces_policy_but_takes_no_routes(
        cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    cp.apply({"egress.yaml": [
        internet("Allow"),
        # overlaps the cluster networks (10.0.0.0/8): Accepted=False, still Deny for its addresses
        egress_network("overlapping", "Deny", networks=[{"cidr": "203.0.113.0/25"}, {"cidr": "10.1.0.0/16"}]),
    ], "routes.yaml": [route("HTTPRoute", "ignored", [parent("overlapping", 80)],
                             [path_rule("Exact", "/allowed")])]})
    status = http_json(cp.debug_url + "/debug/status")
    en = [o for o in status["objects"] if o["kind"] == "EgressNetwork" and o["name"] == "overlapping"]
    assert en and en[0]["conditions"][0]["status"] == "False", en
    checker.check(team_a, Probe("http", TEN, 80, path="/allowed"), "deny", by=f"{GLOBAL}/overlapping")
    checker.check(team_a, Probe("tls", TEN, 443, sni="x.example.com"), "deny")
    checker.check(team_a, Probe("http", B200, 80, path="/allowed"), "forward", server="http-200",
                  by=INTERNET)
    checker.verify()


def test_port_sieve_trap_tls_to_another_network_on_443(cp: ControlPlane, team_a: Sidecar,
                                                       checker: Checker) -> None:
    cp.apply({
        "egress.yaml": [
            internet("Deny"),
            egress_network("partners", "Deny", networks=[{"cidr": "203.0.113.0/25"}]),
            egress_network("open", "Allow", networks=[{"cidr": "203.0.113.128/25"}]),
        ],
        "routes.yaml": [route("TLSRoute", "partner-api", [parent("partners", 443)], [{"backendRefs": []}],
                              hostnames=["api.example.com"])],
    })
    opened = f"{GLOBAL}/open"
    checker.check(team_a, Probe("tls", B200, 443, sni="www.example.com"), "forward", server="tls-200",
                  by=opened)
    checker.check(team_a, Probe("tls", B200, 443, sni="api.example.com"), "forward", server="tls-200")
    checker.check(team_a, Probe("tls", B230, 443, sni=None), "forward", server="tls-230", by=opened)
    checker.check(team_a, Probe("http", B200, 80), "forward", server="http-200", by=opened)
    checker.check(team_a, Probe("tls", TEN, 443, sni="api.example.com"), "forward", server="tls-10",
                  route=f"TLSRoute {GLOBAL}/partner-api")
    checker.check(team_a, Probe("tls", TEN, 443, sni="www.example.com"), "deny", by=f"{GLOBAL}/partners")
    checker.check(team_a, Probe("http", TEN, 80), "deny", by=f"{GLOBAL}/partners")
    checker.verify()


def test_grpc_route_and_permission_denied(cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [route("GRPCRoute", "echo", [parent("internet", 50051)], [
                  {"matches": [{"method": {"service": "lab.Echo", "method": "Call"}}]},
                  {"matches": [{"method": {"service": "lab.Echo", "method": "Broken"}}],
                   "backendRefs": [backend("no-such-service", 50051)]},
                  {"matches": [{"method": {"service": "lab.Gateway"}}],
                   "backendRefs": [backend("egress-gw", 50052)]},
              ]), service("egress-gw", SVC, {"grpc": 50052})]})
    checker.check(team_a, Probe("grpc", TEN, 50051, path="/lab.Gateway/Any"), "redirect",
                  server="svc-grpc")
    checker.check(team_a, GRPC_10, "forward", server="grpc-10", route=f"GRPCRoute {GLOBAL}/echo")
    denied = checker.check(team_a, Probe("grpc", TEN, 50051, path="/lab.Echo/Other"), "deny",
                           by=INTERNET)
    # grpc-status 7 in a trailers-only HTTP 200 answer: an HTTP 403 would read
    # "Received http2 header with status: 403" instead of Envoy's message.
    assert denied.grpc_code == "PERMISSION_DENIED" and denied.detail == "traffic not allowed"
    broken = checker.check(team_a, Probe("grpc", TEN, 50051, path="/lab.Echo/Broken"), "invalid")
    assert broken.grpc_code == "UNKNOWN" and "invalid backend" in broken.detail
    checker.verify()
    entries = access_log_entries(team_a.pod.envoy_log(tail=2_000_000))
    entry = find_log_entry(entries, Probe("grpc", TEN, 50051, path="/lab.Echo/Other"), denied)
    assert entry is not None and entry["status"] == 200 and entry["grpc_status"] == 7, entry


def test_invalid_backends_answer_500_or_close(cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    cp.apply({
        "egress.yaml": [internet("Allow"),
                        egress_network("other", "Allow", networks=[{"cidr": f"{TWELVE}/32"}])],
        "routes.yaml": [
            route("HTTPRoute", "broken", [parent("internet", 80)], [
                path_rule("PathPrefix", "/missing", [backend("does-not-exist", 80)]),
                path_rule("PathPrefix", "/other-network",
                          [backend("other", group="policy.linkerd.io", kind="EgressNetwork")]),
            ]),
            route("TLSRoute", "broken", [parent("internet", 443)],
                  [{"backendRefs": [backend("does-not-exist", 443)]}], hostnames=["broken.example.com"]),
            route("TCPRoute", "broken", [parent("internet", 5432)],
                  [{"backendRefs": [backend("does-not-exist", 5432)]}]),
        ],
    })
    obs = checker.check(team_a, Probe("http", TEN, 80, path="/missing/x"), "invalid",
                        route=f"HTTPRoute {GLOBAL}/broken")
    assert obs.status == 500 and "invalid backend" in obs.raw.body
    checker.check(team_a, Probe("http", TEN, 80, path="/other-network"), "invalid")
    checker.check(team_a, Probe("http", TEN, 80, path="/fine"), "forward", server="http-10")
    checker.check(team_a, Probe("tls", TEN, 443, sni="broken.example.com"), "invalid")
    checker.check(team_a, Probe("tls", TEN, 443, sni="fine.example.com"), "forward", server="tls-10")
    checker.check(team_a, PG_10, "invalid")
    checker.verify()


def test_http_hostnames_paths_methods_and_filters(cp: ControlPlane, team_a: Sidecar,
                                                 checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [
                  route("HTTPRoute", "api", [parent("internet", 80)], [
                      path_rule("Exact", "/v1/status"),
                      {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/orders"},
                                    "method": "POST"}],
                       "filters": [{"type": "RequestHeaderModifier",
                                    "requestHeaderModifier": {"add": [{"name": "x-egress",
                                                                       "value": "api"}]}}]},
                  ], hostnames=["api.example.com"]),
                  route("HTTPRoute", "wild", [parent("internet", 80)], [path_rule("PathPrefix", "/wild")],
                        hostnames=["*.example.com"]),
                  route("HTTPRoute", "moved", [parent("internet", 80)], [
                      {"filters": [{"type": "RequestRedirect",
                                    "requestRedirect": {"hostname": "new.example.com",
                                                        "statusCode": 301}}]},
                  ], hostnames=["old.example.com"]),
              ]})
    api = f"HTTPRoute {GLOBAL}/api"
    checker.check(team_a, Probe("http", TEN, 80, host="api.example.com", path="/v1/status"),
                  "forward", server="http-10", route=api)
    # Host matching ignores case, a trailing dot and the port.
    checker.check(team_a, Probe("http", TEN, 80, host="API.Example.COM.", path="/v1/status"),
                  "forward", server="http-10", route=api)
    checker.check(team_a, Probe("http", TEN, 80, host="api.example.com:80", path="/v1/status"),
                  "forward", server="http-10", route=api)
    posted = checker.check(team_a, Probe("http", TEN, 80, host="api.example.com", path="/v1/orders/7",
                                         method="POST"), "forward", server="http-10", route=api)
    assert posted.raw.json["headers"].get("x-egress") == "api"
    checker.check(team_a, Probe("http", TEN, 80, host="api.example.com", path="/v1/orders"), "deny")
    checker.check(team_a, Probe("http", TEN, 80, host="api.example.com", path="/v1/ordersx",
                                method="POST"), "deny")  # PathPrefix is element-wise
    checker.check(team_a, Probe("http", TEN, 80, host="a.b.example.com", path="/wild/1"), "forward",
                  server="http-10", route=f"HTTPRoute {GLOBAL}/wild")
    checker.check(team_a, Probe("http", TEN, 80, host="example.com", path="/wild/1"), "deny")
    moved = checker.check(team_a, Probe("http", TEN, 80, host="old.example.com", path="/p"), "redirect")
    assert moved.status == 301 and moved.detail.startswith("http://new.example.com/p"), moved.detail

    # A denied request keeps the connection open: allowed, denied, allowed on one connection.
    from egress_xds.lab import http_on

    conn = team_a.pod.http_connection(TEN, 80)
    try:
        statuses = [http_on(conn, p, host="api.example.com").status
                    for p in ("/v1/status", "/nope", "/v1/status")]
    finally:
        conn.close()
    assert statuses == [200, 403, 200]
    checker.verify()


def _rewrite(path: Mapping[str, str], hostname: str | None = None) -> Doc:
    rewrite: Doc = {"path": dict(path)}
    if hostname is not None:
        rewrite["hostname"] = hostname
    return {"type": "URLRewrite", "urlRewrite": rewrite}


def test_url_rewrite_and_redirect_filters(cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    prefix = "ReplacePrefixMatch"
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [route("HTTPRoute", "rewrites", [parent("internet", 80)], [
                  {**path_rule("PathPrefix", "/v1"),
                   "filters": [_rewrite({"type": prefix, "replacePrefixMatch": "/v2"},
                                        hostname="api-v2.example.com")]},
                  {**path_rule("PathPrefix", "/strip"),
                   "filters": [_rewrite({"type": prefix, "replacePrefixMatch": "/"})]},
                  {**path_rule("PathPrefix", "/legacy"),
                   "filters": [_rewrite({"type": "ReplaceFullPath", "replaceFullPath": "/new"})]},
                  {**path_rule("Exact", "/secure"),
                   "filters": [{"type": "RequestRedirect",
                                "requestRedirect": {"scheme": "https", "statusCode": 301}}]},
              ])]})
    seen = {}
    for path in ("/v1/items?q=1", "/strip/x", "/strip", "/legacy/a/b"):
        obs = checker.check(team_a, Probe("http", TEN, 80, path=path), "forward", server="http-10")
        seen[path] = (obs.raw.json or {}).get("path") if obs.raw.status == 200 else None
        if path.startswith("/v1"):
            assert obs.host_seen == "api-v2.example.com"
    moved = checker.check(team_a, Probe("http", TEN, 80, path="/secure"), "redirect")
    checker.verify()
    assert moved.status == 301 and moved.detail == f"https://{TEN}/secure"
    # Gateway API: ReplacePrefixMatch replaces the matched prefix element-wise, "/" included.
    assert seen == {"/v1/items?q=1": "/v2/items?q=1", "/strip/x": "/x", "/strip": "/",
                    "/legacy/a/b": "/new"}


def test_tls_sni_exact_beats_wildcard(cp: ControlPlane, team_a: Sidecar, checker: Checker) -> None:
    cp.apply({"egress.yaml": [internet("Deny"), service("egress-gw", SVC, {"tls": 8443})],
              "routes.yaml": [
                  route("TLSRoute", "wildcard", [parent("internet", 443)], [{"backendRefs": []}],
                        hostnames=["*.example.com"]),
                  route("TLSRoute", "secure", [parent("internet", 443)],
                        [{"backendRefs": [backend("egress-gw", 8443)]}], hostnames=["secure.example.com"]),
              ]})
    checker.check(team_a, Probe("tls", TEN, 443, sni="secure.example.com"), "redirect", server="svc-tls",
                  route=f"TLSRoute {GLOBAL}/secure")
    checker.check(team_a, Probe("tls", TEN, 443, sni="a.b.example.com"), "forward", server="tls-10",
                  route=f"TLSRoute {GLOBAL}/wildcard")
    checker.check(team_a, Probe("tls", TEN, 443, sni="example.com"), "deny")
    checker.check(team_a, Probe("tls", TEN, 443, sni="example.org"), "deny")
    checker.verify()


def test_live_change_without_restarting_envoy(cp: ControlPlane, team_a: Sidecar, team_b: Sidecar,
                                              checker: Checker, record_property: Any) -> None:
    pod = team_a.pod
    cp.apply({"egress.yaml": [internet("Deny")]})
    live = Probe("http", TEN, 80, path="/live")
    checker.check(team_a, live, "deny")
    checker.check(team_a, TLS_10, "deny")
    assert pod.envoy is not None
    envoy_pid, lds_before = pod.envoy.pid, pod.stat("listener_manager.lds.update_success")

    # Adding a route flips /live from denied to allowed.
    started = time.monotonic()
    cp.write("routes.yaml", [route("HTTPRoute", "live", [parent("internet", 80)],
                                   [path_rule("Exact", "/live")])])
    TIMINGS["HTTPRoute file written -> first 200 (team-a, SotW)"] = started_to(started, lambda: pod.http(TEN, 80, "/live").status == 200)
    TIMINGS["HTTPRoute file written -> first 200 (team-b, delta)"] = started_to(
        started, lambda: team_b.pod.http(TEN, 80, "/live").status == 200)
    cp.sync()
    checker.check(team_a, live, "forward", server="http-10", route=f"HTTPRoute {GLOBAL}/live")
    checker.check(team_a, Probe("http", TEN, 80, path="/dead"), "deny")

    # Deleting the EgressNetwork falls back to forwarding everything.
    started = time.monotonic()
    cp.remove("egress.yaml")
    TIMINGS["EgressNetwork file deleted -> first TLS answered (fallback)"] = started_to(
        started, lambda: pod.tls(TEN, 443, "a.example.com").ok)
    cp.sync()
    checker.check(team_a, TLS_10, "forward", server="tls-10", by="")
    checker.check(team_a, Probe("http", TEN, 80, path="/dead"), "forward", server="http-10", by="")

    for name, seconds in TIMINGS.items():
        record_property(name, round(seconds * 1000))  # ms, also in --junitxml
    assert pod.envoy.pid == envoy_pid and pod.envoy.alive(), "Envoy was restarted"
    assert pod.stat("listener_manager.lds.update_success") >= lds_before + 2
    assert pod.stat("listener_manager.lds.update_rejected") == 0
    checker.verify()


def started_to(started: float, probe: Any, timeout: float = 15.0) -> float:
    """Seconds from ``started`` until ``probe()`` is true (polled every 10 ms, bounded)."""
    wait_for(probe, timeout=timeout, interval=0.01, what="the live change")
    return time.monotonic() - started


def test_stats_and_access_log_name_egress_network_port_and_route(cp: ControlPlane, team_a: Sidecar,
                                                                 checker: Checker) -> None:
    pod = team_a.pod
    cp.apply({"egress.yaml": [internet("Deny")],
              "routes.yaml": [
                  route("HTTPRoute", "web-get", [parent("internet", 80)], [path_rule("Exact", "/get")]),
                  route("TLSRoute", "api", [parent("internet", 443)], [{"backendRefs": []}],
                        hostnames=["api.example.com"]),
                  route("TCPRoute", "db", [parent("internet", 5432)], [{"backendRefs": []}]),
              ]})
    prefix = "egress.linkerd-egress.internet"
    counters = {
        "http80": f"http.{prefix}.80.downstream_rq_total",
        "http80_4xx": f"http.{prefix}.80.downstream_rq_4xx",
        "route_get": "vhost.*.route.HTTPRoute_linkerd-egress_web-get.upstream_rq_total",
        "tls_api": f"tcp.{prefix}.443.TLSRoute_linkerd-egress_api.downstream_cx_total",
        "tls_deny": f"tcp.{prefix}.443.default-deny.downstream_cx_total",
        "db": f"tcp.{prefix}.5432.TCPRoute_linkerd-egress_db.downstream_cx_total",
        "any_deny": f"tcp.{prefix}.any.default-deny.downstream_cx_total",
    }

    def read() -> dict[str, int]:
        stats = pod.stats("egress")
        return {k: stats.get(c, 0) for k, c in counters.items()}

    before = read()
    checker.check(team_a, Probe("http", TEN, 80, host="web.example.com", path="/get"), "forward",
                  server="http-10")
    checker.check(team_a, Probe("http", TEN, 80, host="web.example.com", path="/nope"), "deny")
    checker.check(team_a, Probe("tls", TEN, 443, sni="api.example.com"), "forward", server="tls-10")
    checker.check(team_a, Probe("tls", TEN, 443, sni="evil.example.com"), "deny")
    checker.check(team_a, PG_10, "forward", server="pg-10")
    checker.check(team_a, TCP_10, "deny")
    checker.verify()  # includes: each exchange's access log line names EN, port and route

    def deltas() -> dict[str, int]:
        after = read()
        return {k: after[k] - before[k] for k in counters}

    want = {"http80": 2, "http80_4xx": 1, "route_get": 1, "tls_api": 1, "tls_deny": 1, "db": 1,
            "any_deny": 1}
    try:
        wait_for(lambda: deltas() == want, timeout=5, what="stats")
    except LabError:
        pass
    assert deltas() == want

    # Prometheus labels from the bootstrap's stats tags.
    prom = pod.admin("/stats/prometheus")
    assert re.search(r'envoy_tcp_downstream_cx_total\{[^}]*egress_namespace="linkerd-egress"[^}]*'
                     r'egress_network="internet"[^}]*egress_port="443"[^}]*'
                     r'egress_route="TLSRoute_linkerd-egress_api"', prom) or re.search(
        r'envoy_tcp_downstream_cx_total\{(?=[^}]*egress_namespace="linkerd-egress")'
        r'(?=[^}]*egress_network="internet")(?=[^}]*egress_port="443")'
        r'(?=[^}]*egress_route="TLSRoute_linkerd-egress_api")', prom), \
        [line for line in prom.splitlines() if "egress_route" in line][:10]

    # The access log lines themselves, for the record.
    entries = access_log_entries(pod.envoy_log(tail=2_000_000))
    get = [e for e in entries if e.get("path") == "/get" and e.get("status") == 200]
    assert get and get[-1]["route"] == "HTTPRoute linkerd-egress/web-get rules[0].matches[0]"
    assert get[-1]["egress_network"] == INTERNET and get[-1]["namespace"] == TEAM_A
    assert str(get[-1]["port"]) == "80" and get[-1]["host"] == "web.example.com"
    evil = [e for e in entries if e.get("sni") == "evil.example.com"]
    assert evil and evil[-1]["route"] == "default-deny" and str(evil[-1]["port"]) == "443"


def test_envoy_keeps_its_config_while_serve_restarts(lab: Lab, world: dict[str, str],
                                                     tmp_path: Path) -> None:
    """serve stops (SIGTERM): Envoy keeps enforcing its last config; manifests change while it
    is down; serve starts again on the same socket and Envoy reconnects by itself."""
    plane = ControlPlane(lab, tmp_path)
    try:
        side = plane.add_sidecar(lab, "team-c")
        plane.apply({"egress.yaml": [internet("Deny")],
                     "routes.yaml": [route("HTTPRoute", "r", [parent("internet", 80)],
                                           [path_rule("Exact", "/before")])]})
        pod = side.pod
        assert [pod.http(TEN, 80, p).status for p in ("/before", "/after")] == [200, 403]
        assert plane.proc.stop() == 0
        assert [pod.http(TEN, 80, p).status for p in ("/before", "/after")] == [200, 403]
        plane.write("routes.yaml", [route("HTTPRoute", "r", [parent("internet", 80)],
                                          [path_rule("Exact", "/after")])])
        started = time.monotonic()
        plane.start()
        TIMINGS["serve restarted -> Envoy reconnected and applied the change"] = started_to(
            started, lambda: pod.http(TEN, 80, "/after").status == 200, timeout=40)
        plane.sync()
        assert [pod.http(TEN, 80, p).status for p in ("/before", "/after")] == [403, 200]
        assert pod.envoy is not None and pod.envoy.alive()
    finally:
        plane.stop()
        for sidecar in plane.sidecars:
            lab.remove_pod(sidecar.pod)


def test_examples_tour_agrees_with_explain_in_every_namespace(lab: Lab, cp: ControlPlane,
                                                             team_a: Sidecar, checker: Checker) -> None:
    """The bundled examples/ and the demo's tour, from a namespace using the global policy
    (team-a), from one with its own EgressNetwork (payments) and with a consumer route (web)."""
    from egress_xds.demo import EXAMPLES, demo_servers, tour

    steps = tour("web")
    servers = {k: v for k, v in demo_servers(steps, EXAMPLES).items() if f"{k[0]}:{k[1]}" not in WORLD}
    proc = lab.serve([WorldServer(kind, ip, port, name)  # type: ignore[arg-type]
                      for (ip, port), (kind, name) in sorted(servers.items())])
    world = {**WORLD, **{f"{ip}:{port}": name for (ip, port), (_, name) in servers.items()}}
    files = {path.name: [d for d in yaml.safe_load_all(path.read_text()) if d]
             for path in sorted(EXAMPLES.glob("*.yaml"))}
    extra = [cp.add_sidecar(lab, ns) for ns in ("payments", "web")]
    try:
        cp.apply(files)
        for sidecar in (team_a, *extra):
            for step in steps:
                checker.check(sidecar, step.probe, None, world=world)
        checker.verify()
    finally:
        for sidecar in extra:
            cp.sidecars.remove(sidecar)
            lab.remove_pod(sidecar.pod)
        lab.world.stop(proc)


def test_explain_cli_in_a_subprocess_matches_the_in_process_call(cp: ControlPlane,
                                                                  team_a: Sidecar) -> None:
    """The cross-check calls the CLI's code in-process; prove it equals the real command."""
    import subprocess
    import sys

    cp.apply({"egress.yaml": [internet("Deny")]})
    probe = Probe("http", TEN, 80, host="a.example.com", path="/x")
    proc = subprocess.run([sys.executable, "-m", "egress_xds.cli", "explain", "-f", str(cp.dir),
                           "-n", TEAM_A, "--to", probe.destination, *probe.explain_args(), "-o", "json"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(proc.stdout) == explain_probe([cp.dir], TEAM_A, probe)
