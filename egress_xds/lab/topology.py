"""The lab as a whole: one world namespace, pod namespaces wired to it, and a work directory.

In: what to build (pods, world servers); out: a :class:`Lab` whose ``close()`` (or ``with``
exit) stops every process it started, deletes every namespace it created and removes its
work directory. Topology, with ``xl<pid36>-<n>`` naming so parallel sessions never collide:

    pod netns  xl<pid36>-<n>p<i>          world netns  xl<pid36>-<n>w
      eth0  198.51.100.<10+i>/32  <-veth->  pod<i>       (no address)
      route 203.0.113.0/24 dev eth0           route 198.51.100.<10+i>/32 dev pod<i>
                                              lo: 203.0.113.X/32, one per server address

No namespace has a default route; only 198.51.100.0/24 and 203.0.113.0/24 are used, and
nothing is created in the root namespace (veths are made inside the lab namespaces).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from egress_xds.lab.certs import CertFiles, make_certs
from egress_xds.lab.netns import (
    POD_NETWORK,
    WORLD_NETWORK,
    LabError,
    Netns,
    base36,
    check_world_address,
    link_veth,
    run,
    session_prefix,
)
from egress_xds.lab.pod import ADMIN_PORT, OUTBOUND_PORT, PROXY_UID, Pod
from egress_xds.lab.procs import LabProcess
from egress_xds.lab.world import WorldServer

_lab_counter = itertools.count(1)
_counter_lock = threading.Lock()
_MAX_PODS = 50


class World:
    """The world namespace: addresses on its loopback and server processes."""

    def __init__(self, netns: Netns, workdir: Path, certs: CertFiles) -> None:
        self.netns = netns
        self.workdir = workdir
        self.certs = certs
        self.addresses: set[str] = set()
        self.processes: list[LabProcess] = []
        self._seq = itertools.count(1)

    @property
    def name(self) -> str:
        return self.netns.name

    def add_address(self, address: str) -> None:
        """Make ``address`` (203.0.113.0/24) local to the world (idempotent)."""
        ip = str(check_world_address(address))
        if ip not in self.addresses:
            self.netns.ip("addr", "add", f"{ip}/32", "dev", "lo")
            self.addresses.add(ip)

    def serve(self, servers: Iterable[WorldServer], *, timeout: float = 15.0) -> LabProcess:
        """Start one world process serving ``servers``; returns once all are listening.

        Addresses are added to the world first. Stop it early with :meth:`stop` (e.g. to
        make a server disappear); otherwise :meth:`close` stops it.
        """
        specs = list(servers)
        if not specs:
            raise ValueError("no world servers given")
        for spec in specs:
            self.add_address(spec.address)
        n = next(self._seq)
        ready = self.workdir / f"world-{n}.ready"
        args = [sys.executable, "-m", "egress_xds.lab.world", "--ready-file", str(ready),
                "--cert", str(self.certs.cert), "--key", str(self.certs.key)]
        for spec in specs:
            args += ["--listen", spec.to_arg()]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")) if p
        )
        proc = LabProcess(f"world-{n}", self.netns.exec_args(args),
                          self.workdir / f"world-{n}.log", env=env)
        self.processes.append(proc)
        proc.wait_until(ready.exists, "ready file", timeout=timeout)
        return proc

    def stop(self, proc: LabProcess) -> None:
        proc.stop()
        if proc in self.processes:
            self.processes.remove(proc)

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()


class Lab:
    """A world namespace plus pods. Use as a context manager (or call :meth:`close`).

    ``workdir``: where bootstraps, certificates, logs and sockets go (default: a fresh temp
    dir, removed on close unless ``keep_workdir``). ``name`` replaces the generated
    ``xl<pid36>-<n>`` namespace prefix (at most 11 characters; the demo uses a fixed one).
    """

    def __init__(self, *, workdir: Path | None = None, keep_workdir: bool = False,
                 name: str | None = None) -> None:
        with _counter_lock:
            seq = next(_lab_counter)
        self.prefix = name or f"{session_prefix()}-{base36(seq)}"
        if len(self.prefix) > 11:
            raise ValueError(f"lab name {self.prefix!r} longer than 11 characters")
        self._own_workdir = workdir is None
        self.keep_workdir = keep_workdir
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"egress-xds-{self.prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Envoy runs as the proxy uid and must read bootstraps and reach sockets in here.
        self.workdir.chmod(0o755)
        self.pods: list[Pod] = []
        self._namespaces: list[Netns] = []
        self._detached = False
        try:
            certs = make_certs(self.workdir / "certs")
            certs.key.chmod(0o600)
            self.world = World(self._new_netns("w"), self.workdir, certs)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def certs(self) -> CertFiles:
        return self.world.certs

    def _new_netns(self, suffix: str) -> Netns:
        ns = Netns(f"{self.prefix}{suffix}")
        self._namespaces.append(ns)
        return ns

    def add_pod(self, label: str = "default", *, proxy_uid: int = PROXY_UID,
                outbound_port: int = OUTBOUND_PORT, admin_port: int = ADMIN_PORT) -> Pod:
        """A new pod namespace wired to the world (no Envoy, no capture yet).

        ``label`` is free text for humans and logs (e.g. the Kubernetes namespace the pod
        stands for). The pod gets the lowest free index ``i`` among live pods: namespace
        ``<prefix>p<i>``, address 198.51.100.<10 + i>.
        """
        used = {p.index for p in self.pods}
        index = next(i for i in itertools.count() if i not in used)
        if index >= _MAX_PODS:
            raise LabError(f"at most {_MAX_PODS} live pods per lab")
        address = str(POD_NETWORK.network_address + 10 + index)
        ns = self._new_netns(f"p{index}")
        try:
            world_if = f"pod{index}"
            link_veth(ns, "eth0", self.world.netns, world_if)
            ns.ip("addr", "add", f"{address}/32", "dev", "eth0")
            ns.ip("route", "add", str(WORLD_NETWORK), "dev", "eth0", "src", address)
            self.world.netns.ip("route", "add", f"{address}/32", "dev", world_if)
        except BaseException:
            self._drop_netns(ns)
            raise
        pod = Pod(ns, address, label, self.workdir, proxy_uid=proxy_uid,
                  outbound_port=outbound_port, admin_port=admin_port, index=index)
        self.pods.append(pod)
        return pod

    def remove_pod(self, pod: Pod) -> None:
        """Stop the pod's processes and delete its namespace and link (frees its index)."""
        if pod not in self.pods:
            return
        self.pods.remove(pod)
        try:
            pod.close()
        finally:
            self._drop_netns(pod.netns)

    def _drop_netns(self, ns: Netns) -> None:
        # Deleting the veth explicitly is synchronous; the kernel tears a deleted namespace
        # down asynchronously, and the world-side name must be free for the next pod.
        ns.ip("link", "del", "eth0", check=False)
        ns.close()
        if ns in self._namespaces:
            self._namespaces.remove(ns)

    def serve(self, servers: Iterable[WorldServer], *, timeout: float = 15.0) -> LabProcess:
        """Shortcut for ``lab.world.serve(...)``."""
        return self.world.serve(servers, timeout=timeout)

    def socket_dir(self) -> Path:
        """A directory (mode 0755) for unix sockets the proxy uid must reach, e.g. ADS.

        A control plane in the root namespace listens on ``socket_dir()/ads.sock`` (chmod
        the socket 0666) and the bootstrap's ADS cluster uses ``pipe: {path: ...}``.
        """
        path = self.workdir / "sock"
        path.mkdir(mode=0o755, exist_ok=True)
        path.chmod(0o755)
        return path

    def describe(self) -> str:
        """A human summary (namespaces, addresses, processes) for logs and the demo."""
        info = {
            "workdir": str(self.workdir),
            "world": {"netns": self.world.netns.name if hasattr(self, "world") else None,
                      "addresses": sorted(self.world.addresses) if hasattr(self, "world") else []},
            "pods": [{"label": p.label, "netns": p.name, "address": p.address} for p in self.pods],
        }
        return json.dumps(info, indent=2)

    def detach(self) -> Path:
        """Leave everything running after this process exits (e.g. ``demo up``).

        Writes ``<workdir>/lab-state.json`` (namespaces, and each started process's pid with
        its kernel start time) and turns :meth:`close` into a no-op. Tear down later, from
        any process, with :func:`destroy_detached`.
        """
        procs: list[LabProcess] = [p for pod in self.pods for p in pod.processes]
        procs += self.world.processes
        state = {
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "remove_workdir": self._own_workdir and not self.keep_workdir,
            "namespaces": [ns.name for ns in self._namespaces],
            "processes": [
                {"name": p.name, "pid": p.pid, "start_time": process_start_time(p.pid)}
                for p in procs if p.alive()
            ],
        }
        path = self.workdir / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        self._detached = True
        return path

    def close(self) -> None:
        """Stop every process, delete every namespace, remove the work dir. Idempotent."""
        if self._detached:
            return
        errors: list[str] = []
        for pod in reversed(self.pods):
            try:
                pod.close()
            except Exception as exc:
                errors.append(repr(exc))
        if hasattr(self, "world"):
            try:
                self.world.close()
            except Exception as exc:
                errors.append(repr(exc))
        for ns in reversed(self._namespaces):
            ns.close()
        self._namespaces.clear()
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise LabError("lab cleanup: " + "; ".join(errors))


STATE_FILE = "lab-state.json"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def process_start_time(pid: int) -> int | None:
    """The kernel start time of ``pid`` (field 22 of /proc/PID/stat), None if it is gone."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _same_process_running(pid: int, start_time: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and int(fields[19]) == start_time and fields[0] != "Z"


def destroy_detached(workdir: Path, *, timeout: float = 5.0) -> list[str]:
    """Undo :meth:`Lab.detach`: stop its processes, delete its namespaces; return what was done.

    A recorded pid is signalled only if its start time still matches (never a reused pid).
    Missing state file: nothing to do.
    """
    path = Path(workdir) / STATE_FILE
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    done: list[str] = []
    for proc in reversed(state.get("processes", [])):
        pid, start_time = int(proc["pid"]), proc.get("start_time")
        if start_time is None or not _same_process_running(pid, start_time):
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while _same_process_running(pid, start_time) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _same_process_running(pid, start_time):
                break
        done.append(f"stopped {proc['name']} (pid {pid})")
    for name in reversed(state.get("namespaces", [])):
        if run(["ip", "netns", "del", name], check=False).returncode == 0:
            done.append(f"deleted netns {name}")
    path.unlink()
    if state.get("remove_workdir"):
        shutil.rmtree(state["workdir"], ignore_errors=True)
    return done


def standard_servers(addresses: Sequence[str] = ("203.0.113.10", "203.0.113.11")) -> list[WorldServer]:
    """TLS (443), HTTP (80), TCP (9000) and gRPC (50051) on each address.

    Named ``<kind>-<last octet>``, e.g. ``tls-10`` on 203.0.113.10:443. Scenario tests add
    "Service" backends on their own addresses (e.g. 203.0.113.200) the same way.
    """
    servers = []
    for address in addresses:
        octet = address.rsplit(".", 1)[-1]
        servers += [
            WorldServer.tls(address, 443, f"tls-{octet}"),
            WorldServer.http(address, 80, f"http-{octet}"),
            WorldServer.tcp(address, 9000, f"tcp-{octet}"),
            WorldServer.grpc(address, 50051, f"grpc-{octet}"),
        ]
    return servers
