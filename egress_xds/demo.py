"""``make demo``: the control plane and a real Envoy sidecar on the bundled examples.

``python -m egress_xds.demo up`` (root, Linux): builds a network-namespace lab
(:mod:`egress_xds.lab`), starts world servers for the addresses the tour visits and the
Services in ``examples/``, starts ``egress-xds serve`` on ``examples/`` in the background,
starts one pod whose Envoy is bootstrapped by ``egress-xds bootstrap`` (traffic captured by
``envoy/capture.sh``), runs a short scripted tour (each request: what ``egress-xds explain``
says, ALLOWED or DENIED by which EgressNetwork and route, and what really happened), and
returns, leaving everything running (pids and the lab state in ``.demo/``).
``python -m egress_xds.demo down`` stops it all and removes ``.demo/``; both are idempotent.
Without root or network namespaces, ``up`` says why and runs ``egress-xds serve`` alone in
the foreground.

The explain-versus-reality check lives here too, shared with ``tests/e2e``: a :class:`Probe`
is one client exchange (HTTP, TLS, opaque TCP or gRPC) from a pod; :func:`observe` performs
it and classifies what the client saw (:class:`Observation`); :func:`explain_probe` runs the
product's ``egress-xds explain -o json`` for the same (namespace, IP, port, SNI/Host/path);
:func:`disagreements` says where they differ (empty: they agree), and
:func:`attribution_problems` compares the verdict with the line Envoy's access log wrote
for that exchange (:func:`access_log_entries`, :func:`find_log_entry`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    from egress_xds.lab import LabProcess, Pod

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
STATE_DIR = REPO / ".demo"
LAB_NAME = "xdemo"  # namespaces xdemow (world) and xdemop0 (the pod)
DEMO_NAMESPACE = "web"
DEBUG_LISTEN = "127.0.0.1:19000"
# Envoy flushes its access log every 10 s by default; the tests and the tour read it sooner.
ENVOY_ARGS = ("--file-flush-interval-msec", "100")

ProbeKind = Literal["http", "tls", "tcp", "grpc"]


# ---- one exchange, observed and explained ------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One client exchange from a pod to ``ip:port``.

    ``http``: ``method`` ``path`` with Host ``host`` (default: the IP). ``tls``: a handshake
    with ``sni`` (None: no SNI). ``tcp``: one line of opaque bytes. ``grpc``: a unary call to
    ``path`` (``/pkg.Service/Method``) with ``:authority`` ``host``.
    """

    kind: ProbeKind
    ip: str
    port: int
    sni: str | None = None
    host: str | None = None
    path: str = "/"
    method: str = "GET"
    payload: str = "hello from the pod"

    @property
    def destination(self) -> str:
        return f"{self.ip}:{self.port}"

    def describe(self) -> str:
        if self.kind == "http":
            return f"HTTP {self.method} {self.host or self.ip}{self.path} -> {self.destination}"
        if self.kind == "tls":
            return f"TLS  SNI={self.sni or '(none)'} -> {self.destination}"
        if self.kind == "grpc":
            return f"gRPC {self.path} -> {self.destination}"
        return f"TCP  opaque bytes -> {self.destination}"

    def explain_args(self) -> list[str]:
        """The ``egress-xds explain`` flags describing this exchange (after ``--to``)."""
        if self.kind == "http":
            return ["--host", self.host or self.ip, "--path", self.path, "--method", self.method]
        if self.kind == "grpc":
            return ["--host", self.host or self.ip, "--path", self.path, "--method", "POST"]
        if self.kind == "tls" and self.sni is not None:
            return ["--sni", self.sni]
        # TLS without SNI and opaque bytes both look like "opaque" to explain.
        return []


Seen = Literal["reached", "http-403", "http-500", "http-3xx", "http-other", "grpc-denied",
               "grpc-unknown", "grpc-other", "closed", "failed"]


@dataclass
class Observation:
    """What the client saw, classified.

    ``seen``: ``reached`` (a world server answered: ``server``), an HTTP status class, a gRPC
    status class, ``closed`` (accepted, then closed/reset without an answer) or ``failed``
    (refused, timeout, unreachable, error: never a valid egress outcome).
    """

    seen: Seen
    server: str | None = None
    status: int | None = None
    grpc_code: str | None = None
    denied_by: str | None = None
    sni_seen: str | None = None
    host_seen: str | None = None
    detail: str = ""
    started: float = 0.0  # wall clock, for finding the access log line
    ended: float = 0.0
    raw: Any = None

    def summary(self) -> str:
        if self.seen == "reached":
            extra = f", SNI seen {self.sni_seen!r}" if self.sni_seen is not None else ""
            extra += f", Host seen {self.host_seen!r}" if self.host_seen is not None else ""
            return f"answered by {self.server}{extra}"
        if self.seen == "http-403":
            return f"HTTP 403 (x-egress-denied-by: {self.denied_by})"
        if self.seen in ("http-500", "http-3xx", "http-other"):
            return f"HTTP {self.status}: {self.detail[:80]}"
        if self.seen.startswith("grpc"):
            return f"gRPC {self.grpc_code}: {self.detail[:80]}"
        if self.seen == "closed":
            return f"connection closed by the sidecar ({self.detail})"
        return f"failed: {self.detail[:120]}"


def observe(pod: Pod, probe: Probe, *, timeout: float = 5.0) -> Observation:
    """Perform ``probe`` from ``pod`` and classify the result."""
    started = time.time()
    obs = _observe(pod, probe, timeout)
    obs.started, obs.ended = started, time.time()
    return obs


def _observe(pod: Pod, probe: Probe, timeout: float) -> Observation:
    if probe.kind == "http":
        r = pod.http(probe.ip, probe.port, probe.path, method=probe.method, host=probe.host,
                     timeout=timeout)
        if r.outcome != "ok" or r.status is None:
            return Observation("closed" if r.closed else "failed", detail=r.outcome + " " + r.error,
                               raw=r)
        body = r.json if isinstance(r.json, dict) else {}
        if r.server is not None and 200 <= r.status < 300:
            return Observation("reached", server=r.server, status=r.status,
                               host_seen=body.get("host"), raw=r)
        seen: Seen = ("http-403" if r.status == 403 else "http-500" if r.status == 500
                      else "http-3xx" if 300 <= r.status < 400 else "http-other")
        return Observation(seen, server=r.server, status=r.status,
                           denied_by=r.headers.get("x-egress-denied-by"),
                           detail=r.headers.get("location") or r.body, raw=r)
    if probe.kind == "tls":
        t = pod.tls(probe.ip, probe.port, probe.sni, timeout=timeout)
        if t.outcome == "ok" and t.server is not None:
            return Observation("reached", server=t.server, sni_seen=t.sni, raw=t)
        return Observation("closed" if t.closed else "failed", detail=t.outcome, raw=t)
    if probe.kind == "tcp":
        c = pod.tcp(probe.ip, probe.port, probe.payload, timeout=timeout)
        if c.outcome == "ok" and c.reply is not None and "server" in c.reply:
            return Observation("reached", server=str(c.reply["server"]), raw=c)
        return Observation("closed" if c.closed else "failed", detail=c.outcome, raw=c)
    g = pod.grpc(probe.ip, probe.port, probe.path, authority=probe.host, timeout=timeout)
    if g.outcome != "ok":
        return Observation("failed", detail=f"{g.outcome} {g.code} {g.details}", raw=g)
    if g.code == "OK":
        return Observation("reached", server=g.server, grpc_code=g.code, raw=g)
    grpc_seen: Seen = ("grpc-denied" if g.code == "PERMISSION_DENIED" else
                       "grpc-unknown" if g.code == "UNKNOWN" else "grpc-other")
    return Observation(grpc_seen, grpc_code=g.code, detail=g.details,
                       denied_by=g.trailers.get("x-egress-denied-by"), raw=g)


def explain_probe(manifests: Sequence[str | os.PathLike[str]], namespace: str, probe: Probe,
                  extra_args: Sequence[str] = ()) -> dict[str, Any]:
    """``egress-xds explain -o json`` for ``probe`` from ``namespace`` (the real CLI code,
    run in this process)."""
    from egress_xds import cli

    argv = ["explain", *[a for m in manifests for a in ("-f", str(m))], "-n", namespace,
            "--to", probe.destination, *probe.explain_args(), "-o", "json", *extra_args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    if code != 0:
        raise RuntimeError(f"egress-xds {' '.join(argv)} exited {code}: {err.getvalue()}")
    verdict: dict[str, Any] = json.loads(out.getvalue())
    return verdict


def verdict_allows(verdict: Mapping[str, Any]) -> bool:
    return verdict["action"] in ("forward", "redirect")


def disagreements(probe: Probe, verdict: Mapping[str, Any], obs: Observation,
                  world: Mapping[str, str]) -> list[str]:
    """Where the observed exchange contradicts the verdict (empty list: they agree).

    ``world`` maps ``ip:port`` to the name of the server listening there. forward/redirect
    (to a destination) = that server answered (TLS: it saw the client's SNI; HTTP: the
    client's Host); redirect without destination = an HTTP 3xx; deny = HTTP 403 naming the
    EgressNetwork, gRPC PERMISSION_DENIED, TLS/TCP closed; invalid = HTTP 500, gRPC UNKNOWN,
    TLS/TCP closed.
    """
    action = verdict["action"]
    problems: list[str] = []
    if action in ("forward", "redirect") and (action == "forward" or verdict.get("destination")):
        target = str(verdict.get("destination"))
        want = world.get(target)
        if obs.seen != "reached":
            problems.append(f"explain says {action} to {target}, but the client saw: {obs.summary()}")
        elif want is None:
            problems.append(f"explain says {action} to {target}, where no lab server listens; "
                            f"{obs.server} answered")
        elif obs.server != want:
            problems.append(f"explain says {action} to {target} ({want}), but {obs.server} answered")
        elif probe.kind == "tls" and obs.sni_seen != probe.sni:
            problems.append(f"the server saw SNI {obs.sni_seen!r}, the client sent {probe.sni!r}")
        elif probe.kind == "http" and probe.host and _host(obs.host_seen) != _host(probe.host):
            problems.append(f"the server saw Host {obs.host_seen!r}, the client sent {probe.host!r}")
        return problems
    if action == "redirect":
        if obs.seen != "http-3xx":
            problems.append(f"explain says HTTP redirect, but the client saw: {obs.summary()}")
        return problems
    closes = "connection is closed" in str(verdict.get("reason", ""))
    if action == "deny":
        if probe.kind == "http" and closes:
            # explain treats these bytes as opaque (e.g. an opaque port): closed, no 403
            if obs.seen != "closed":
                problems.append(f"explain says deny (connection closed), but the client saw: "
                                f"{obs.summary()}")
        elif probe.kind == "http":
            if obs.seen != "http-403":
                problems.append(f"explain says deny (HTTP 403), but the client saw: {obs.summary()}")
            elif verdict.get("egress_network") and obs.denied_by != verdict["egress_network"]:
                problems.append(f"x-egress-denied-by is {obs.denied_by!r}, explain names "
                                f"{verdict['egress_network']!r}")
        elif probe.kind == "grpc":
            if obs.seen != "grpc-denied":
                problems.append(f"explain says deny (gRPC PERMISSION_DENIED), but the client saw: "
                                f"{obs.summary()}")
        elif obs.seen != "closed":
            problems.append(f"explain says deny (connection closed), but the client saw: {obs.summary()}")
        return problems
    if action == "invalid":
        want_seen = {"http": "http-500", "grpc": "grpc-unknown"}.get(probe.kind, "closed")
        if str(verdict.get("route") or "").startswith(("TCPRoute", "TLSRoute")):
            want_seen = "closed"  # a TCP/TLS route's invalid backend closes, whatever the bytes
        if obs.seen != want_seen:
            problems.append(f"explain says invalid backend ({want_seen}), but the client saw: "
                            f"{obs.summary()}")
        return problems
    return [f"unknown explain action {action!r}"]


def _host(value: str | None) -> str | None:
    """A Host as routing sees it: the sidecar strips the port and a trailing dot (Gateway API
    hostname matching), and names are case-insensitive."""
    if value is None:
        return None
    name = value.lower()
    if not name.startswith("[") and name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


# ---- Envoy's access log ------------------------------------------------------------------


def access_log_entries(text: str) -> list[dict[str, Any]]:
    """The JSON access log lines (they carry ``egress_network``) in an Envoy output."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"egress_network"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _entry_time(entry: Mapping[str, Any]) -> float | None:
    value = entry.get("time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def find_log_entry(entries: Iterable[Mapping[str, Any]], probe: Probe, obs: Observation,
                   *, slack: float = 0.0015,
                   taken: set[int] | None = None) -> Mapping[str, Any] | None:
    """The access log line of this exchange: same destination (and HTTP path), started
    while the probe ran (Envoy's START_TIME has millisecond precision, hence ``slack``).
    Entries whose ``id()`` is in ``taken`` are skipped; the one found is added to it."""
    for entry in entries:
        if taken is not None and id(entry) in taken:
            continue
        if entry.get("destination") != probe.destination:
            continue
        if probe.kind in ("http", "grpc") and entry.get("protocol") == "http" \
                and entry.get("path") != probe.path:
            continue
        when = _entry_time(entry)
        if when is None or not obs.started - slack <= when <= obs.ended + slack:
            continue
        if taken is not None:
            taken.add(id(entry))
        return entry
    return None


def log_route(route: str | None) -> str | None:
    """Access log route names to explain's: ``HTTPRoute ns/name rules[0].matches[0]`` (HTTP
    route name) and ``TLSRoute ns/name`` (tcp_proxy) both become ``Kind ns/name``."""
    if route is None:
        return None
    return route.split(" rules[", 1)[0]


def attribution_problems(namespace: str, probe: Probe, verdict: Mapping[str, Any],
                         obs: Observation, entry: Mapping[str, Any] | None) -> list[str]:
    """Does Envoy's access log line name the namespace, EgressNetwork, port and route that
    explain names (and the SNI / HTTP status the client saw)?"""
    if entry is None:
        return ["no access log line for this exchange"]
    problems = []
    en = verdict.get("egress_network")
    if entry.get("namespace") != namespace:
        problems.append(f"access log namespace {entry.get('namespace')!r} != {namespace!r}")
    if en is not None and entry.get("egress_network") != en:
        problems.append(f"access log egress_network {entry.get('egress_network')!r}, explain {en!r}")
    if en is None and entry.get("egress_network") not in ("fallback", "cluster"):
        problems.append(f"access log egress_network {entry.get('egress_network')!r}, explain: none")
    if str(entry.get("port")) != str(probe.port):
        problems.append(f"access log port {entry.get('port')!r} != {probe.port}")
    route = verdict.get("route")
    if route == "default":
        route = "default-allow" if verdict_allows(verdict) else "default-deny"
    if route is not None and log_route(entry.get("route")) != route:
        problems.append(f"access log route {entry.get('route')!r}, explain {verdict.get('route')!r}")
    if probe.kind == "tls" and entry.get("sni") != probe.sni:
        problems.append(f"access log sni {entry.get('sni')!r} != {probe.sni!r}")
    if probe.kind == "http" and entry.get("protocol") == "http" and obs.status is not None \
            and entry.get("status") != obs.status:
        problems.append(f"access log status {entry.get('status')!r}, client saw {obs.status}")
    return problems


# ---- control plane and sidecar -------------------------------------------------------------


def serve_args(manifests: Sequence[str | os.PathLike[str]], ads: str, debug: str,
               extra: Sequence[str] = ()) -> list[str]:
    args = [sys.executable, "-m", "egress_xds.cli", "serve", "--ads-listen", ads,
            "--debug-listen", debug]
    for path in manifests:
        args += ["--manifests", str(path)]
    return args + list(extra)


def debug_url_from_log(text: str) -> str | None:
    """The debug URL ``serve`` logged in its ``serving`` line (JSON on stderr)."""
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "serving" and event.get("debug"):
            return str(event["debug"])
    return None


def start_control_plane(manifests: Sequence[str | os.PathLike[str]], socket_path: Path,
                        log_path: Path, *, debug_listen: str = "127.0.0.1:0",
                        extra: Sequence[str] = (), timeout: float = 20.0) -> tuple[LabProcess, str]:
    """``egress-xds serve`` in this (root) namespace with ADS on a unix socket that pods reach;
    returns the process and its debug URL once it is serving."""
    from egress_xds.lab import LabProcess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    offset = log_path.stat().st_size if log_path.exists() else 0  # a restart appends
    proc = LabProcess("egress-xds-serve",
                      serve_args(manifests, f"unix:{socket_path}", debug_listen, extra),
                      log_path, env=env)
    found: list[str] = []

    def serving() -> bool:
        with open(log_path, "rb") as log:
            log.seek(offset)
            url = debug_url_from_log(log.read().decode(errors="replace"))
        if url and socket_path.exists():
            found.append(url)
            return True
        return False

    try:
        proc.wait_until(serving, "serving (ADS socket and debug endpoint)", timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return proc, found[0]


def render_bootstrap(namespace: str, ads: str, *, delta: bool = False,
                     node_id: str | None = None) -> str:
    """The sidecar bootstrap, exactly as ``egress-xds bootstrap`` prints it."""
    from egress_xds.bootstrap import BootstrapOptions, render

    return render(BootstrapOptions(namespace=namespace, ads=ads, delta=delta, node_id=node_id))


def start_sidecar(pod: Pod, namespace: str, ads: str, bootstrap_path: Path, *,
                  delta: bool = False, node_id: str | None = None) -> None:
    """Envoy in ``pod`` for a client in ``namespace``, connected to ``ads``, capture on."""
    bootstrap_path.write_text(render_bootstrap(namespace, ads, delta=delta, node_id=node_id))
    pod.start_envoy(bootstrap_path, extra_args=ENVOY_ARGS)
    pod.wait_for_listener()
    pod.capture()


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


# ---- the demo ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TourStep:
    probe: Probe
    says: str  # what the step shows, for the reader


def tour(namespace: str) -> list[TourStep]:
    """The scripted requests (destinations in 203.0.113.0/24, served by the demo world)."""
    far, partner = "203.0.113.130", "203.0.113.10"
    return [
        TourStep(Probe("http", far, 80, host="httpbin.example.com", path="/get"),
                 "a producer route of the Deny `internet` network lets GET /get out"),
        TourStep(Probe("http", far, 80, host="httpbin.example.com", path="/anything"),
                 "any other path gets 403 from the sidecar"),
        TourStep(Probe("http", far, 80, host="httpbin.example.com", path="/post", method="POST"),
                 f"a consumer route in {namespace!r} (only its clients get it)"),
        TourStep(Probe("http", far, 80, host="audit.example.com", path="/audit"),
                 "a route sends this Host to a Service inside the cluster"),
        TourStep(Probe("tls", far, 443, sni="api.example.com"),
                 "TLS is routed by SNI, never terminated"),
        TourStep(Probe("tls", far, 443, sni="evil.example.com"),
                 "another SNI is accepted and closed"),
        TourStep(Probe("tls", far, 443, sni="payments.example.com"),
                 "only `payments` (its own EgressNetwork and TLSRoute) may reach this SNI"),
        TourStep(Probe("tcp", far, 9000), "a TCPRoute forwards opaque bytes on port 9000"),
        TourStep(Probe("tcp", far, 5432), "Postgres port (opaque, no detection): closed"),
        TourStep(Probe("http", partner, 80, host="partner.example.com", path="/orders"),
                 "`partners` (Allow, a smaller block) wins over `internet` for 203.0.113.0/25"),
        TourStep(Probe("tls", partner, 443, sni="partner.example.com"),
                 "... for every protocol and port"),
    ]


def _server_kind(port: int, name: str = "") -> str:
    label = name.lower()
    if "grpc" in label or port in (50051, 9090):
        return "grpc"
    if "tls" in label or "https" in label or port in (443, 8443):
        return "tls"
    if "tcp" in label or port in (5432, 3306, 6379, 9000):
        return "tcp"
    return "http"


def demo_servers(steps: Sequence[TourStep], manifests: Path) -> dict[tuple[str, int], tuple[str, str]]:
    """(ip, port) -> (kind, server name): one world server per tour destination, plus one per
    port of each Service whose clusterIP is a lab world address (a stand-in for the cluster)."""
    from egress_xds.lab import WORLD_NETWORK

    servers: dict[tuple[str, int], tuple[str, str]] = {}
    for step in steps:
        p = step.probe
        octet = p.ip.rsplit(".", 1)[-1]
        servers.setdefault((p.ip, p.port), (p.kind, f"{p.kind}-{octet}-{p.port}"))
    for path in sorted(manifests.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Service":
                continue
            meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
            ip = spec.get("clusterIP")
            try:
                if not ip or ipaddress.ip_address(ip) not in WORLD_NETWORK:
                    continue
            except ValueError:
                continue
            for port in spec.get("ports") or []:
                number = int(port.get("port", 0))
                if not number:
                    continue
                kind = _server_kind(number, str(port.get("name", "")))
                servers[(ip, number)] = (kind, f"svc-{meta.get('name', 'service')}-{number}")
    return servers


@dataclass
class DemoState:
    lab_workdir: str
    serve_pid: int
    serve_start_time: int | None
    debug_url: str
    pod_netns: str
    admin: str
    namespace: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Place:
    """Where a demo lives: its state directory, lab namespace prefix and debug address
    (defaults: ``.demo/``, ``xdemo``, 127.0.0.1:19000; the e2e test uses its own)."""

    state_dir: Path = STATE_DIR
    lab_name: str = LAB_NAME
    debug_listen: str = DEBUG_LISTEN

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def load(self) -> DemoState | None:
        try:
            return DemoState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _print(text: str = "") -> None:
    print(text, flush=True)


def _running(state: DemoState) -> bool:
    from egress_xds.lab.topology import process_start_time

    return (state.serve_start_time is not None
            and process_start_time(state.serve_pid) == state.serve_start_time)


def lab_unavailable() -> str | None:
    """Why the lab cannot run here (not root, no ``ip netns``/iptables, no Envoy), or None."""
    from egress_xds.lab import unavailable_reason

    return unavailable_reason()


def serve_alone(manifests: Path, reason: str, debug_listen: str = DEBUG_LISTEN) -> int:
    """The fallback: ``egress-xds serve`` on the examples in the foreground."""
    _print(f"egress-xds demo: cannot build the network-namespace lab: {reason}")
    _print("Running `egress-xds serve` alone on the examples instead (Ctrl-C stops it):")
    _print(f"  ADS on 127.0.0.1:18000, debug endpoint http://{debug_listen}/debug/snapshots")
    _print("  connect an Envoy: egress-xds bootstrap --namespace web > bootstrap.yaml && "
           "envoy -c bootstrap.yaml")
    _print(f"  try: egress-xds explain -f {manifests} -n web --to 203.0.113.130:80 "
           "--host httpbin.example.com --path /get")
    argv = serve_args([manifests], "127.0.0.1:18000", debug_listen)
    try:
        os.execv(argv[0], argv)
    except OSError as exc:
        _print(f"egress-xds demo: cannot run {' '.join(argv)}: {exc}")
    return 1


def _place(args: argparse.Namespace) -> Place:
    return Place(Path(args.state_dir).resolve(), args.lab_name,
                 getattr(args, "debug_listen", DEBUG_LISTEN))


def cmd_up(args: argparse.Namespace) -> int:
    manifests = Path(args.manifests).resolve()
    place = _place(args)
    reason = "--no-lab was given" if args.no_lab else lab_unavailable()
    if reason is not None:
        return serve_alone(manifests, reason, place.debug_listen)
    if place.state_file.exists() or _lab_namespaces(place.lab_name):
        state = place.load()
        if state is not None and _running(state):
            _print("The demo is already running.")
            _print_access(state)
            return 0
        _print("Removing what a previous demo left behind first.")
        down(place)
    return up(manifests, args.namespace, place)


def up(manifests: Path, namespace: str, place: Place) -> int:
    """Build the lab, start serve and the sidecar, run the tour, detach; 0 if explain and the
    real traffic agreed on every request."""
    from egress_xds.lab import Lab, LabError, WorldServer
    from egress_xds.lab.topology import process_start_time

    if not any(manifests.glob("*.y*ml")):
        _print(f"egress-xds demo: no manifests in {manifests}")
        return 1
    place.state_dir.mkdir(parents=True, exist_ok=True)
    steps = tour(namespace)
    servers = demo_servers(steps, manifests)
    # The lab's own temporary directory (mode 0755 under /tmp): Envoy runs as the proxy uid
    # and must reach its bootstrap and the ADS socket, which a checkout under /root forbids.
    lab = Lab(name=place.lab_name)
    (place.state_dir / "lab-workdir").write_text(str(lab.workdir))
    serve_proc: LabProcess | None = None
    try:
        _print(f"==> lab: world namespace {lab.world.name}, servers on "
               f"{', '.join(sorted({ip for ip, _ in servers}))}")
        lab.serve([WorldServer(kind, ip, port, name)  # type: ignore[arg-type]
                   for (ip, port), (kind, name) in sorted(servers.items())])
        sock = lab.socket_dir() / "ads.sock"
        _print(f"==> egress-xds serve --manifests {manifests} --ads-listen unix:{sock}")
        log = place.state_dir / "serve.log"
        try:
            serve_proc, debug_url = start_control_plane([manifests], sock, log,
                                                        debug_listen=place.debug_listen)
        except LabError:  # e.g. the debug port is taken: let serve pick a free one
            serve_proc, debug_url = start_control_plane([manifests], sock, log)
        pod = lab.add_pod(namespace)
        _print(f"==> pod {pod.name} ({pod.address}), namespace {namespace!r}: "
               f"Envoy from `egress-xds bootstrap --namespace {namespace} --ads unix:{sock}`")
        start_sidecar(pod, namespace, f"unix:{sock}", place.state_dir / "bootstrap.yaml",
                      node_id=f"demo-pod.{namespace}")
        _wait_synced(debug_url, namespace)
        world = {f"{ip}:{port}": name for (ip, port), (_, name) in servers.items()}
        ok = _tour(pod, namespace, manifests, steps, world)
        state = DemoState(lab_workdir=str(lab.workdir), serve_pid=serve_proc.pid,
                          serve_start_time=process_start_time(serve_proc.pid),
                          debug_url=debug_url, pod_netns=pod.name,
                          admin=f"127.0.0.1:{pod.admin_port}", namespace=namespace)
        lab_state = json.loads(lab.detach().read_text())
        state.extra["processes"] = [{"name": "egress-xds serve", "pid": serve_proc.pid},
                                    *({"name": p["name"], "pid": p["pid"]}
                                      for p in lab_state.get("processes", []))]
        state.extra["namespaces"] = lab_state.get("namespaces", [])
        place.state_file.write_text(json.dumps(state.__dict__, indent=2))
        (place.state_dir / "networkpolicy.yaml").write_text(network_policy(namespace))
    except BaseException:
        if serve_proc is not None:
            serve_proc.stop()
        lab.close()
        (place.state_dir / "lab-workdir").unlink(missing_ok=True)
        _print(f"egress-xds demo failed; logs are in {place.state_dir} (`make demo-down` removes them)")
        raise
    _print()
    _print_network_policy(namespace, place.state_dir / "networkpolicy.yaml")
    _print_access(state)
    if not ok:
        _print("\nWARNING: explain and the real traffic disagreed on some requests (see above).")
    return 0 if ok else 1


def _wait_synced(debug_url: str, namespace: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            proxies = http_json(debug_url + "/debug/proxies")["proxies"]
            mine = [p for p in proxies if p["namespace"] == namespace]
            if mine and all(t["state"] == "SYNCED" for p in mine for t in p["types"].values()):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sidecar did not sync with egress-xds within {timeout}s")
        time.sleep(0.1)


def _tour(pod: Pod, namespace: str, manifests: Path, steps: Sequence[TourStep],
          world: Mapping[str, str]) -> bool:
    _print(f"\n==> tour: requests from the pod (namespace {namespace!r}), each explained by "
           f"`egress-xds explain -f {manifests.name} -n {namespace} ...` and then really made\n")
    all_agree = True
    for n, step in enumerate(steps, 1):
        probe = step.probe
        verdict = explain_probe([manifests], namespace, probe)
        obs = observe(pod, probe)
        problems = disagreements(probe, verdict, obs, world)
        word = "ALLOWED" if verdict_allows(verdict) else "DENIED"
        if verdict["action"] == "invalid":
            word = "BROKEN"
        _print(f"{n:2}. {probe.describe()}")
        _print(f"    {step.says}")
        _print(f"    {word:8} by {verdict['egress_network'] or '(no EgressNetwork: fallback)'}, "
               f"route {verdict['route'] or '-'}: {verdict['reason']}")
        mark = "agrees with explain" if not problems else "DISAGREES: " + "; ".join(problems)
        _print(f"    really:  {obs.summary()}  [{mark}]")
        all_agree = all_agree and not problems
    return all_agree


def network_policy(namespace: str) -> str:
    """The complementary NetworkPolicy the demo shows (spec §7)."""
    return f"""# A sidecar can be bypassed (a container that skips the iptables capture, or runs as the
# proxy uid, goes straight out). Egress control by a mesh alone is not a security boundary:
# back it with a NetworkPolicy. It cannot tell the sidecar from the app (same pod IP), so it
# allows only what the EgressNetworks may ever allow: the cluster networks, DNS, and the
# public blocks some route or Allow network opens. Everything else is dropped by the CNI.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-backstop
  namespace: {namespace}
spec:
  podSelector: {{}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: 10.0.0.0/8}}
    - ipBlock: {{cidr: 100.64.0.0/10}}
    - ipBlock: {{cidr: 172.16.0.0/12}}
    - ipBlock: {{cidr: 192.168.0.0/16}}
  - ports:
    - {{protocol: UDP, port: 53}}
    - {{protocol: TCP, port: 53}}
  - to:
    - ipBlock: {{cidr: 203.0.113.0/24}}   # the only public block examples/ lets anything reach
    ports:
    - {{protocol: TCP, port: 80}}
    - {{protocol: TCP, port: 443}}
    - {{protocol: TCP, port: 9000}}
"""


def _print_network_policy(namespace: str, path: Path) -> None:
    _print("Remember: a sidecar can be bypassed; egress control by a mesh alone is not a security")
    _print(f"boundary. Pair it with a NetworkPolicy like {path} (namespace {namespace!r}): it only")
    _print("lets pods reach the cluster, DNS and the public block the policy may allow at all.")
    _print()


def _print_access(state: DemoState) -> None:
    ns = state.pod_netns
    _print("The demo keeps running in the background:")
    _print(f"  control plane debug endpoint: {state.debug_url}/debug/proxies "
           f"(also /debug/snapshots, /debug/status, /metrics)")
    _print(f"    egress-xds status --debug-url {state.debug_url}")
    _print(f"  Envoy admin, inside the pod's network namespace {ns}:")
    _print(f"    ip netns exec {ns} curl -s http://{state.admin}/stats?filter=egress")
    _print(f"    ip netns exec {ns} curl -s http://{state.admin}/config_dump")
    _print("  requests as the pod (captured by the sidecar):")
    _print(f"    ip netns exec {ns} curl -si -H 'Host: httpbin.example.com' http://203.0.113.130/get")
    _print(f"  Envoy log with its JSON access log lines: {Path(state.lab_workdir) / (ns + '-envoy.log')}")
    _print("  edit examples/*.yaml: serve applies changes live")
    _print("  stop everything: make demo-down")


def _lab_namespaces(lab_name: str) -> list[str]:
    if shutil.which("ip") is None:
        return []
    from egress_xds.lab.netns import run

    listed = run(["ip", "netns", "list"], check=False).stdout.splitlines()
    names = [line.split(" ", 1)[0] for line in listed]
    return [n for n in names if re.fullmatch(rf"{re.escape(lab_name)}(w|p\d+)", n)]


def down(place: Place) -> list[str]:
    """Stop the demo's processes (only those it started, by pid and start time), delete its
    namespaces, remove its state directory. Idempotent; returns what was done."""
    from egress_xds.lab import destroy_detached
    from egress_xds.lab.netns import run

    done: list[str] = []
    state = place.load()
    if state is not None and _running(state):
        _stop_pid(state.serve_pid, state.serve_start_time)
        done.append(f"stopped egress-xds serve (pid {state.serve_pid})")
    lab_dirs = {Path(state.lab_workdir)} if state is not None else set()
    with contextlib.suppress(OSError):
        lab_dirs.add(Path((place.state_dir / "lab-workdir").read_text().strip()))
    for lab_dir in sorted(lab_dirs):
        if (lab_dir / "lab-state.json").exists():
            done += destroy_detached(lab_dir)
        if lab_dir.name.startswith("egress-xds-") and lab_dir.exists():
            shutil.rmtree(lab_dir, ignore_errors=True)
    for name in _lab_namespaces(place.lab_name):  # left by an `up` that died before detaching
        run(["ip", "netns", "del", name], check=False)
        done.append(f"deleted netns {name}")
    if place.state_dir.exists():
        shutil.rmtree(place.state_dir, ignore_errors=True)
        done.append(f"removed {place.state_dir}")
    return done


def cmd_down(args: argparse.Namespace) -> int:
    done = down(_place(args))
    for line in done:
        _print(line)
    _print("demo is down" if done else "nothing to do: the demo is not running")
    return 0


def _stop_pid(pid: int, start_time: int | None, timeout: float = 5.0) -> None:
    """SIGTERM (then SIGKILL) ``pid``, only while it is still the process we started."""
    from egress_xds.lab.topology import process_start_time

    def same() -> bool:
        return start_time is not None and process_start_time(pid) == start_time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not same():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while same() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egress_xds.demo",
                                     description="Run egress-xds with a real Envoy sidecar on the examples.")
    sub = parser.add_subparsers(dest="command", required=True)
    up_p = sub.add_parser("up", help="start the demo (root: lab + sidecar + tour; else serve alone)")
    up_p.add_argument("--manifests", default=str(EXAMPLES), help="manifest directory (default: examples/)")
    up_p.add_argument("--namespace", default=DEMO_NAMESPACE,
                      help="the pod's namespace (default: %(default)s)")
    up_p.add_argument("--no-lab", action="store_true",
                      help="do not build the lab: run `egress-xds serve` on the manifests in the foreground")
    up_p.add_argument("--debug-listen", default=DEBUG_LISTEN,
                      help="serve's debug endpoint (default: %(default)s; a free port if taken)")
    up_p.set_defaults(func=cmd_up)
    down_p = sub.add_parser("down", help="stop the demo and remove everything it created")
    down_p.set_defaults(func=cmd_down)
    for p in (up_p, down_p):
        p.add_argument("--state-dir", default=str(STATE_DIR), help="default: %(default)s")
        p.add_argument("--lab-name", default=LAB_NAME,
                       help="namespace prefix, at most 11 characters (default: %(default)s)")
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
